"""Image features of the patch around each spot, streamed from the lazily read image through an encoder."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import ATTRS_KEY, TABLE_KEY
from .._docs import doc_params
from .._image import (
    IN_MEMORY_MAX_BYTES,
    ImageReader,
    MultiScalePatchDataset,
    PatchDataset,
    PatchLayout,
    load_readers,
)
from .._logging import log_added, logger
from .._section import check_section
from .._validate import check_count
from ._patches import add_patch_shapes, patch_layout, patch_sizes

if TYPE_CHECKING:
    import torch
    from spatialdata import SpatialData

#: On the CPU, the patches of a batch go through the encoder this many input pixels at a time (four
#: patches of 224 px): the activations of a few patches stay in the processor's caches, which makes
#: depthwise-separable encoders such as lite0 several times faster than passes of whole batches of 32,
#: with the same features up to float32 rounding. ``None`` passes whole batches.
CPU_PASS_PIXELS: int | None = 4 * 224 * 224


@doc_params
def image_features(
    sdata: SpatialData,
    *,
    encoder: str = "lite0",
    patch_um: float | Sequence[float] = 112.0,
    working_mpp: float | None = None,
    weights: str | Path | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str = "auto",
    stain: bool | None = None,
    table_key: str = TABLE_KEY,
    image_key: str | None = None,
    key_added: str | None = None,
    progress: bool = True,
) -> None:
    """Encode the patch around each spot into a feature vector.

    For each spot, a square patch of ``patch_um`` microns centred on it is read from the image (lazily,
    from the suitable pyramid level; see :func:`patches`), resampled to the encoder's input size, stain
    normalised when :func:`normalize_stain` was called on the section, normalised as the encoder expects,
    and passed through the encoder in batches from a torch ``DataLoader``.

    Parameters
    ----------
    sdata
        The section; its image needs a known microns per pixel (see :func:`hist2st_tk.io.get_mpp`).
    encoder
        A registered encoder (:func:`hist2st_tk.encoders.available_encoders`: ``"lite0"``,
        ``"autoencoder"``, ``"handcrafted"``, ``"fft"``) or any timm model as ``"timm:<model name>"``.
    patch_um
        Edge of the square patch in microns, or several edges for multi-scale features.
    working_mpp
        Render each patch at this many microns per pixel before resampling it to the encoder's input,
        as a coarser scanner would have imaged it, so that scans of any resolution at least this fine
        give the same features (the default model uses 4.0; see the robustness page of the docs).
        ``None`` keeps the image's own resolution.
    weights
        Weights of the encoder: a local checkpoint for timm models (or ``"hub"`` when online), the
        directory written by :func:`fit_autoencoder` for ``"autoencoder"``; ``None`` for the bundled
        ImageNet weights of ``"lite0"``.
    batch_size
        Patches per batch (per size). On the CPU each batch goes through the encoder a few patches at a
        time (four of 224 px), which is faster there and gives the same features.
    num_workers
        DataLoader worker processes that read and resample patches while the encoder runs.
    device
        Torch device; ``"auto"`` picks CUDA when available, else the CPU.
    stain
        Apply the stain normaliser recorded by :func:`normalize_stain`: ``None`` applies it when one is
        recorded, ``True`` requires one, ``False`` never applies it.
    {table_key}
    image_key
        The image to read; by default the section's image.
    key_added
        ``obsm`` key of the features; by default ``"X_{encoder}"`` (timm names made key-safe).
    {progress}

    Returns
    -------
    ``None``. Writes, for one patch size:

    - ``table.obsm[key]``: float32, spots x features, ``key = key_added or "X_{encoder}"``;
    - ``table.uns[key]["params"]``: the encoder's metadata (name, input size, normalisation, output
      size, licence, weights), ``weights_path``, patch geometry (``patch_um``, ``mpp``, ``mpp_source``,
      ``patch_px``, ``working_mpp``, ``render_px``, ``level``, ``n_padded``), ``stain`` (the method applied or ``None``) and the
      throughput (``patches_per_s``);
    - ``shapes["{spots}_patches_{um}um"]``: the patches (see :func:`patches`).

    With several sizes, one ``obsm`` key per size, ``f"{key}_{um}um"`` (e.g. ``X_lite0_56um``), each with
    its ``uns`` entry. The sizes are encoded in one pass over the spots: the image is decoded once, and
    each spot's largest patch is read once and the smaller ones cut out of it, which gives the same
    pixels, hence the same features, as one call per size. Patches reaching past the image border are
    padded with white and flagged. Nothing is written when the call fails.

    Examples
    --------
    >>> import hist2st_tk as ht
    >>> sdata = ht.datasets.synthetic(n_spots=16, n_genes=4)
    >>> ht.pp.image_features(sdata, encoder="handcrafted", patch_um=56, progress=False)
    >>> sdata["table"].obsm["X_handcrafted"].shape[0]
    16
    """
    from ..encoders import build_encoder, feature_key

    batch_size = check_count(batch_size, "batch_size")
    num_workers = _check_workers(num_workers)
    sizes = patch_sizes(patch_um)
    table = check_section(sdata, table_key, spots=True)
    # the steps before the first batch (importing torch and the encoder, decoding the image) take a while
    logger.info(
        "image features of %d spots (%s, %s um patches%s): loading the encoder and the image",
        table.n_obs,
        encoder,
        "/".join(f"{size:g}" for size in sizes),
        "" if working_mpp is None else f" at {working_mpp:g} um/px",
    )
    module, spec = build_encoder(encoder, weights=weights)
    # a trained encoder knows its tile size (the autoencoder's); the registry's is the default
    input_px = int(getattr(module, "input_px", None) or spec.input_px)
    layouts = [
        patch_layout(
            sdata, size, input_px=input_px, table_key=table_key, image_key=image_key, working_mpp=working_mpp
        )
        for size in sizes
    ]
    transform = stain_transform(sdata, layouts[0].image_key, stain=stain)
    torch_device = _resolve_device(device)
    module = module.to(torch_device)

    # One pass over the spots for all sizes: the image is decoded once, each spot's largest patch is read
    # once and the smaller ones are cut out of it (the same pixels as reading them: MultiScalePatchDataset).
    readers = _readers(sdata, layouts)
    dataset = MultiScalePatchDataset(
        [
            PatchDataset(layout, readers[layout.level], out_px=input_px, transform=transform)
            for layout in layouts
        ]
    )
    start = time.perf_counter()
    features = encode_scales(
        module,
        dataset,
        mean=spec.mean,
        std=spec.std,
        batch_size=batch_size,
        num_workers=num_workers,
        device=torch_device,
        progress=progress,
        description=f"{encoder} {'/'.join(f'{size:g}' for size in sizes)} um",
    )
    seconds = (time.perf_counter() - start) / len(layouts)  # each size's share of the pass

    base = key_added or feature_key(encoder)
    results = {}
    for layout, values in zip(layouts, features, strict=True):
        key = base if len(sizes) == 1 else f"{base}_{layout.patch_um:g}um"
        params = _params(spec, weights, layout, transform, seconds=seconds, n=len(dataset))
        params["encoder"]["input_px"] = input_px
        if hasattr(module, "map_channels"):  # feature maps: what a convolution head needs to reshape them
            params["encoder"]["map_channels"] = int(module.map_channels)
        results[key] = (values, params, layout)

    for key, (values, params, layout) in results.items():
        add_patch_shapes(sdata, layout)
        table.obsm[key] = values
        table.uns[key] = {"params": params}
        log_added(f"{table_key}.obsm[{key!r}]", values.shape)


def encode(
    module: torch.nn.Module,
    dataset,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    description: str = "patches",
) -> np.ndarray:
    """Features of every patch of a dataset of uint8 ``(3, H, W)`` tensors, as float32 ``(n, D)``."""
    return encode_scales(
        module,
        _Single(dataset),
        mean=mean,
        std=std,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        progress=progress,
        description=description,
    )[0]


def encode_scales(
    module: torch.nn.Module,
    dataset,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    description: str = "patches",
) -> list[np.ndarray]:
    """Features of a dataset of tuples of uint8 ``(3, H, W)`` tensors (one per patch size,
    :class:`~hist2st_tk._image.MultiScalePatchDataset`), as one float32 ``(n, D)`` array per size.

    The patches of each size go through the encoder in batches of ``batch_size`` spots, the same batches
    as :func:`encode` on that size alone, so the features are the same as encoding each size by itself.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    device = torch.device(device)
    shift = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    scale = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    module = module.to(memory_format=torch.channels_last)
    outputs: list[list[torch.Tensor]] = []
    with torch.inference_mode():
        for batches in tqdm(loader, desc=description, unit="batch", disable=not progress, leave=False):
            if not outputs:
                outputs = [[] for _ in batches]
            for batch, out in zip(batches, outputs, strict=True):
                for part in encoder_passes(batch, device):
                    x = part.to(device, non_blocking=True).float().div_(255.0)
                    x = ((x - shift) / scale).contiguous(memory_format=torch.channels_last)
                    out.append(module(x).float().cpu())
    features = [torch.cat(out).numpy().astype(np.float32, copy=False) for out in outputs]
    if not all(np.isfinite(values).all() for values in features):
        msg = "The encoder returned NaN or infinite features; check its weights and input normalisation."
        raise ValueError(msg)
    return features


def encoder_passes(batch: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
    """A batch split into the parts that go through the encoder together: on the CPU, a few patches at
    a time (``CPU_PASS_PIXELS``), whole batches elsewhere."""
    if device.type != "cpu" or CPU_PASS_PIXELS is None:
        return (batch,)
    step = max(CPU_PASS_PIXELS // (batch.shape[-2] * batch.shape[-1]), 2)
    return batch.split(step)


class _Single:
    """A dataset of tensors as a dataset of 1-tuples of them (for :func:`encode_scales`)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return (self.dataset[index],)


def patch_reader(sdata: SpatialData, layout: PatchLayout) -> ImageReader:
    return _readers(sdata, [layout])[layout.level]


def _readers(sdata: SpatialData, layouts: Sequence[PatchLayout]) -> dict[int, ImageReader]:
    """One reader per pyramid level the layouts read (of one image), decoded together."""
    from .._sdata import image_levels

    levels = image_levels(sdata.images[layouts[0].image_key])
    readers = {
        layout.level: ImageReader(levels[layout.level], in_memory_max_bytes=IN_MEMORY_MAX_BYTES)
        for layout in layouts
    }
    # Decode before the DataLoader forks its workers, so they share one copy of the image.
    load_readers(list(readers.values()))
    return readers


def _check_workers(num_workers: int) -> int:
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        msg = f"`num_workers` must be an integer >= 0, got {num_workers!r}."
        raise ValueError(msg)
    return num_workers


def _resolve_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        msg = f"Unknown `device` {device!r}: {err}"
        raise ValueError(msg) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        msg = f"`device={device!r}` but CUDA is not available here; use device='cpu' or 'auto'."
        raise ValueError(msg)
    return resolved


def stain_transform(sdata: SpatialData, image_key: str, *, stain: bool | None):
    recorded = sdata.attrs.get(ATTRS_KEY, {}).get("stain", {}).get(image_key)
    if stain is False or (stain is None and recorded is None):
        return None
    if recorded is None:
        msg = (
            f"`stain=True` but no stain normaliser is recorded for image {image_key!r}; "
            "call `ht.pp.normalize_stain(sdata, ...)` first."
        )
        raise ValueError(msg)
    from ._stain import stain_normalizer

    return stain_normalizer(sdata, image_key)


def _params(spec, weights, layout: PatchLayout, transform, *, seconds: float, n: int) -> dict[str, Any]:
    return {
        "encoder": spec.describe(),
        "weights_path": None if weights is None else str(weights),
        **layout.params(),
        "stain": getattr(transform, "method", None) if transform is not None else None,
        "patches_per_s": n / seconds if seconds > 0 else None,
    }
