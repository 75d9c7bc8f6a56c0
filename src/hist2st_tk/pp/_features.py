"""Image features of the patch around each spot, streamed from the lazily read image through an encoder."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import ATTRS_KEY, TABLE_KEY
from .._logging import log_added
from .._sdata import get_table
from .._validate import check_count
from ._patches import (
    IN_MEMORY_MAX_BYTES,
    ImageReader,
    PatchDataset,
    PatchLayout,
    add_patch_shapes,
    patch_layout,
    patch_sizes,
)

if TYPE_CHECKING:
    import torch
    from spatialdata import SpatialData


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
        Patches per forward pass.
    num_workers
        DataLoader worker processes that read and resample patches while the encoder runs.
    device
        Torch device; ``"auto"`` picks CUDA when available, else the CPU.
    stain
        Apply the stain normaliser recorded by :func:`normalize_stain`: ``None`` applies it when one is
        recorded, ``True`` requires one, ``False`` never applies it.
    table_key
        Name of the table of spots.
    image_key
        The image to read; by default the section's image.
    key_added
        ``obsm`` key of the features; by default ``"X_{encoder}"`` (timm names made key-safe).
    progress
        Show a progress bar.

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
    its ``uns`` entry. Patches reaching past the image border are padded with white and flagged.
    Nothing is written when the call fails.

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
    table = get_table(sdata, table_key)
    module, spec = build_encoder(encoder, weights=weights)
    # a trained encoder knows its tile size (the autoencoder's); the registry's is the default
    input_px = int(getattr(module, "input_px", None) or spec.input_px)
    layouts = [
        patch_layout(
            sdata, size, input_px=input_px, table_key=table_key, image_key=image_key, working_mpp=working_mpp
        )
        for size in sizes
    ]
    transform = _stain_transform(sdata, layouts[0].image_key, stain=stain)
    torch_device = _resolve_device(device)
    module = module.to(torch_device)

    base = key_added or feature_key(encoder)
    results = {}
    for layout in layouts:
        key = base if len(sizes) == 1 else f"{base}_{layout.patch_um:g}um"
        dataset = PatchDataset(layout, _reader(sdata, layout), out_px=input_px, transform=transform)
        start = time.perf_counter()
        features = encode(
            module,
            dataset,
            mean=spec.mean,
            std=spec.std,
            batch_size=batch_size,
            num_workers=num_workers,
            device=torch_device,
            progress=progress,
            description=f"{encoder} {layout.patch_um:g} um",
        )
        seconds = time.perf_counter() - start
        params = _params(spec, weights, layout, transform, seconds=seconds, n=len(dataset))
        params["encoder"]["input_px"] = input_px
        if hasattr(module, "map_channels"):  # feature maps: what a convolution head needs to reshape them
            params["encoder"]["map_channels"] = int(module.map_channels)
        results[key] = (features, params, layout)

    for key, (features, params, layout) in results.items():
        add_patch_shapes(sdata, layout)
        table.obsm[key] = features
        table.uns[key] = {"params": params}
        log_added(f"{table_key}.obsm[{key!r}]", features.shape)


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
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    device = torch.device(device)
    shift = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    scale = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    module = module.to(memory_format=torch.channels_last)
    outputs = []
    with torch.inference_mode():
        for batch in tqdm(loader, desc=description, unit="batch", disable=not progress, leave=False):
            x = batch.to(device, non_blocking=True).float().div_(255.0)
            x = ((x - shift) / scale).contiguous(memory_format=torch.channels_last)
            outputs.append(module(x).float().cpu())
    features = torch.cat(outputs).numpy().astype(np.float32, copy=False)
    if not np.isfinite(features).all():
        msg = "The encoder returned NaN or infinite features; check its weights and input normalisation."
        raise ValueError(msg)
    return features


def _reader(sdata: SpatialData, layout: PatchLayout) -> ImageReader:
    from .._sdata import image_levels

    level = image_levels(sdata.images[layout.image_key])[layout.level]
    # Decode before the DataLoader forks its workers, so they share one copy of the image.
    return ImageReader(level, in_memory_max_bytes=IN_MEMORY_MAX_BYTES).load()


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


def _stain_transform(sdata: SpatialData, image_key: str, *, stain: bool | None):
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
