"""Self-supervised training of the HistoSPACE autoencoder on the sections' own patches."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .._constants import TABLE_KEY
from .._docs import doc_params
from .._image import PatchDataset
from .._logging import logger
from .._validate import check_count
from ._features import patch_reader, stain_transform
from ._patches import check_patch_um, patch_layout

if TYPE_CHECKING:
    from spatialdata import SpatialData


def _as_float(batch):
    """Collate uint8 patches into a float batch in [0, 1] (module level: picklable for workers)."""
    import torch

    return torch.stack(batch).float().div_(255.0)


@doc_params
def fit_autoencoder(
    sdatas: SpatialData | Sequence[SpatialData],
    path: str | Path,
    *,
    patch_um: float = 112.0,
    tile_px: int = 64,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    stain: bool | None = None,
    table_key: str = TABLE_KEY,
    num_workers: int = 0,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Train the HistoSPACE convolutional autoencoder on the patches of the sections, and save it.

    Self-supervised: only the H&E is used, so the sections may include those a model will later be
    evaluated on (their expression is never read). The saved directory is an encoder:
    ``ht.pp.image_features(sdata, encoder="autoencoder", weights=path)`` (pooled vectors) or
    ``encoder="autoencoder_map"`` (the flattened feature map, for the ``histospace`` predictor).

    Parameters
    ----------
    sdatas
        The section(s) whose spot patches are the training tiles.
    path
        Directory to write (``weights.safetensors`` + ``autoencoder.json``).
    patch_um
        Edge of the patch around each spot, in microns.
    tile_px
        Edge the patches are resampled to; a multiple of 8.
    epochs, batch_size, lr, seed
        Training settings (Adam, mean squared error; seeded, deterministic on the CPU).
    stain
        Apply each section's recorded stain normaliser (see :func:`image_features`).
    {table_key}
    num_workers
        DataLoader workers reading patches.
    device
        Torch device to train on.
    overwrite
        Replace an existing directory at ``path``.
    {progress}

    Returns
    -------
    The directory written. Writes nothing into the sections. Its ``autoencoder.json`` records
    ``patch_um``, ``tile_px``, the sections and their microns per pixel, ``epochs`` and the final loss.
    """
    import torch
    from spatialdata import SpatialData
    from torch.utils.data import ConcatDataset, DataLoader

    from ..encoders._autoencoder import ConvAutoencoder, train_autoencoder
    from ..encoders._autoencoder_files import save_autoencoder

    sections = [sdatas] if isinstance(sdatas, SpatialData) else list(sdatas)
    if not sections:
        msg = "`sdatas` is empty: pass at least one section."
        raise ValueError(msg)
    patch_um = check_patch_um(patch_um)
    tile_px = check_count(tile_px, "tile_px")
    if tile_px % 8:
        msg = f"`tile_px` must be a multiple of 8 (three 2x poolings), got {tile_px}."
        raise ValueError(msg)
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        msg = f"{str(path)!r} already exists; pass `overwrite=True` to replace it."
        raise FileExistsError(msg)

    datasets, provenance = [], []
    for sdata in sections:
        layout = patch_layout(sdata, patch_um, input_px=tile_px, table_key=table_key)
        transform = stain_transform(sdata, layout.image_key, stain=stain)
        datasets.append(PatchDataset(layout, patch_reader(sdata, layout), out_px=tile_px, transform=transform))
        provenance.append({"image_key": layout.image_key, "mpp": layout.mpp, "spots": len(layout.spot_ids)})
    loader = DataLoader(
        ConcatDataset(datasets),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=_as_float,
        num_workers=num_workers,
    )
    torch.manual_seed(seed)
    model = ConvAutoencoder()
    history = train_autoencoder(
        model, loader, epochs=epochs, lr=lr, seed=seed, device=device, progress=progress
    )
    metadata = {
        "patch_um": patch_um,
        "tile_px": tile_px,
        "sections": provenance,
        "epochs": epochs,
        "final_loss": history["train_loss"][-1],
        "train_loss": history["train_loss"],
        "seed": seed,
    }
    saved = save_autoencoder(model.cpu(), path, metadata=metadata, input_px=tile_px, overwrite=overwrite)
    logger.info("trained the autoencoder on %d patches; saved to %s", sum(len(d) for d in datasets), saved)
    return saved
