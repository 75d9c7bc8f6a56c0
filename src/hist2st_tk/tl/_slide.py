"""Predict expression on one whole-slide image, streamed tile batch by tile batch.

A slide is processed in batches of tiles; the image features of every finished batch can be saved to a
checkpoint folder (:mod:`._checkpoint`), so that an interrupted run resumes where it stopped. The
predictor itself is cheap next to the encoder and runs once, on all tiles, at the end.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import TABLE_KEY, predicted_key
from .._docs import doc_params
from .._logging import format_ids, log_added, logger
from .._sdata import instance_key, with_table
from .._section import check_section
from .._validate import check_count
from ..pp._model_features import model_features
from ._checkpoint import Checkpoint, fingerprint

if TYPE_CHECKING:
    from spatialdata import SpatialData

    from ..models import Predictor


@doc_params
def predict_slide(
    sdata: SpatialData,
    model: Predictor | str | Path,
    *,
    batch_tiles: int = 4096,
    checkpoint_dir: str | Path | None = None,
    key_added: str | None = None,
    weights: str | Path | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str = "auto",
    table_key: str = TABLE_KEY,
) -> pd.DataFrame:
    """Predict expression on the tiles of a whole-slide image, streaming its features batch by batch.

    The table's rows (tiles from :func:`hist2st_tk.pp.tile_tissue`, or any spots) are split into batches
    of ``batch_tiles`` in table order. For each batch, :func:`hist2st_tk.pp.image_features` computes the
    features the model reads (the encoder and patch size recorded in ``model.inputs``), reading only the
    image chunks under those tiles; the image is never loaded whole. With ``checkpoint_dir``, each finished
    batch's features are saved there, and a later call with the same image, tiles, model inputs and
    ``batch_tiles`` loads them instead of computing them again: **what is resumed is the feature
    extraction of finished batches**; the prediction (cheap) runs again on all tiles, and the result is
    the same, bit for bit, as an uninterrupted run's. A checkpoint folder written for another image, other
    tiles or another model is refused (see ``checkpoint_dir``). Then :func:`predict_expression` writes
    the predictions.

    Tiles whose pixels cannot be decoded (a corrupted chunk of the slide file) are skipped: they are
    dropped from the table, logged, and listed in ``uns["predict_slide"]["skipped_tiles"]``.

    Parameters
    ----------
    sdata
        The slide with its tiles and table (no genes needed).
    model
        A fitted predictor that reads image features (``obsm`` keys), or the directory of a saved one.
    batch_tiles
        Tiles per batch: the unit of streaming and of resuming.
    checkpoint_dir
        Folder for the features of finished batches; ``None`` keeps nothing on disk. Its
        ``manifest.json`` records a fingerprint of the run: the image (the slide file's or zarr store's
        size and modification time, the image's shape, dtype and microns per pixel, and a hash of its
        pixels: all of them for an image up to 16 MiB, else a fixed sample of 64 px windows on a grid and
        at 16 tiles), the tiles (ids and centres), the model's inputs and ``batch_tiles``. A folder whose
        fingerprint differs is refused with a FileExistsError (it is never overwritten); a damaged
        manifest raises a ValueError naming it (delete the folder to start again). Each batch file holds
        the fingerprint and its tiles' ids too: a batch file that cannot be read (truncated, damaged),
        belongs to another run or holds other tiles (files renamed or copied) is never used; a warning
        names it, and the batch is computed again and its file replaced.
    {predictions_key_added}
    weights
        Weights of the encoder when it needs a local file (timm models, ``"autoencoder"``); see
        :func:`hist2st_tk.pp.image_features`.
    batch_size
        Patches per forward pass of the encoder.
    num_workers
        DataLoader worker processes reading patches.
    device
        Torch device; ``"auto"`` picks CUDA when available.
    table_key
        Name of the table of tiles.

    Returns
    -------
    The predictions, tiles x panel genes. Writes, besides what :func:`predict_expression` writes
    (for a table without genes: ``var`` = the panel, ``X`` = the predictions, ``obsm[key]``,
    ``uns[key]["params"]``):

    - ``table.obsm["X_{encoder}"]`` (one per key the model reads) and ``table.uns[...]["params"]``, as
      :func:`hist2st_tk.pp.image_features` writes them (``n_padded`` and ``patches_per_s`` over all batches);
    - ``shapes["{spots}_patches_{um}um"]``: the patches;
    - for a model that reads neighbourhood context, its context keys and the spatial graph
      (``obsp["spatial_connectivities"]`` ...), made from all tiles' streamed features;
    - ``table.uns["predict_slide"]``: ``batch_tiles``, ``n_batches``, ``n_resumed`` (batches loaded from
      the checkpoint), ``n_tiles``, ``skipped_tiles`` (ids) and ``seconds``.

    Nothing is written into ``sdata`` when the call fails (finished batches stay in ``checkpoint_dir``).
    """
    from ..models import resolve
    from ._predict import warn_if_unsuitable

    start = time.perf_counter()
    model = resolve(model)
    specs = feature_specs(model)
    warn_if_unsuitable(sdata, model, table_key=table_key)
    batch_tiles = check_count(batch_tiles, "batch_tiles")
    table = check_section(sdata, table_key, spots=True)
    if table.n_obs == 0:
        msg = (
            f"Table {table_key!r} has no tiles to predict on; `ht.pp.tile_tissue(sdata)` makes them "
            "(a slide where it finds no tissue has none)."
        )
        raise ValueError(msg)
    options = {"weights": weights, "batch_size": batch_size, "num_workers": num_workers, "device": device}
    checkpoint = None
    if checkpoint_dir is not None:
        checkpoint = Checkpoint.open(checkpoint_dir, fingerprint(sdata, table, specs, batch_tiles))
    batches, n_resumed = _stream_batches(
        sdata, table, specs, checkpoint, batch_tiles=batch_tiles, table_key=table_key, options=options
    )

    kept = np.concatenate([b["ids"] for b in batches])
    skipped = [str(i) for b in batches for i in b["skipped"]]
    new_table = table[table.obs[instance_key(table)].isin(kept).to_numpy()].copy()
    for key in specs:
        new_table.obsm[key] = np.concatenate([b["features"][key] for b in batches])
        new_table.uns[key] = {"params": _merged_params([b["params"][key] for b in batches])}
    work = with_table(sdata, table_key, new_table)
    patch_keys = _add_patches(work, specs, table_key)
    context = model_features(work, model, progress=False, table_key=table_key)  # from the streamed features
    predicted = _quiet(_predict_expression)(
        work, model, key_added=key_added, compute_features=False, table_key=table_key
    )
    result = work.tables[table_key]
    result.uns["predict_slide"] = {
        "batch_tiles": batch_tiles,
        "n_batches": len(batches),
        "n_resumed": n_resumed,
        "n_tiles": int(result.n_obs),
        "skipped_tiles": skipped,
        "seconds": time.perf_counter() - start,
    }

    if skipped:
        logger.warning(
            "%d tiles could not be read and were skipped (listed in uns['predict_slide']['skipped_tiles']): %s",
            len(skipped),
            format_ids(skipped),
        )
    sdata.tables[table_key] = result
    for key in patch_keys:
        sdata.shapes[key] = work.shapes[key]
        log_added(f"shapes[{key!r}]", (len(work.shapes[key]),))
    for key in [*specs, *context]:
        log_added(f"{table_key}.obsm[{key!r}]", result.obsm[key].shape)
    pred_key = key_added or predicted_key(model.method)
    log_added(f"{table_key} predictions {pred_key!r} (X, obsm, uns)", predicted.shape)
    log_added(f"{table_key}.uns['predict_slide']")
    return predicted


def _stream_batches(
    sdata: SpatialData,
    table,
    specs: dict,
    checkpoint: Checkpoint | None,
    *,
    batch_tiles: int,
    table_key: str,
    options: dict,
) -> tuple[list[dict], int]:
    """The features of every batch of ``batch_tiles`` rows, in table order, and how many batches were
    loaded from ``checkpoint`` (the others are computed, and saved there)."""
    ids = table.obs[instance_key(table)].to_numpy().astype(str)
    batches, n_resumed = [], 0
    for number, first in enumerate(range(0, table.n_obs, batch_tiles)):
        rows = ids[first : first + batch_tiles]
        batch = checkpoint.load(number, rows) if checkpoint is not None else None
        if batch is not None:
            n_resumed += 1
            batches.append(batch)
            continue
        batch = _batch_features(
            sdata, table[first : first + batch_tiles], specs, table_key=table_key, options=options
        )
        if checkpoint is not None:
            checkpoint.save(number, batch, rows)
        logger.info(
            "slide tiles %d-%d of %d: features in %.1f s",
            first + 1,
            first + len(rows),
            table.n_obs,
            sum(p["seconds"] for p in batch["params"].values()) / max(len(specs), 1),
        )
        batches.append(batch)
    return batches, n_resumed


def feature_specs(model: Predictor) -> dict[str, dict[str, Any]]:
    """``{obsm key: {"encoder", "patch_um", "working_mpp"}}`` of the image features a model reads, from ``model.inputs``.

    Neighbourhood context (a key recorded with ``aggregated_from``) is not streamed: its base key is,
    and the context is averaged over all tiles afterwards (:func:`hist2st_tk.pp.model_features`).
    """
    specs = {}
    for key in model.use_rep:
        spec = model.inputs.get(key, {})
        if "aggregated_from" in spec:
            key, spec = spec["aggregated_from"], model.inputs.get(spec["aggregated_from"], spec)
        if spec.get("encoder") is None or spec.get("patch_um") is None:
            msg = (
                f"The {model.method!r} model does not record the encoder and patch size of its input {key!r} "
                f"(inputs: {model.inputs}); only models that read image features from `ht.pp.image_features` "
                "can be streamed over a slide. Call `ht.tl.predict_expression` on the slide instead."
            )
            raise ValueError(msg)
        specs[key] = {
            "encoder": str(spec["encoder"]),
            "patch_um": float(spec["patch_um"]),
            "working_mpp": spec.get("working_mpp"),
        }
    return specs


def _predict_expression(*args, **kwargs):
    from ._predict import predict_expression

    return predict_expression(*args, **kwargs)


@contextlib.contextmanager
def _logging_level(level: int):
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _quiet(function: Callable) -> Callable:
    """``function`` with the package's info messages muted: a batch's own "added ..." lines are noise."""

    def run(*args, **kwargs):
        with _logging_level(logging.WARNING):
            return function(*args, **kwargs)

    return run


def _batch_features(sdata: SpatialData, rows, specs: dict, *, table_key: str, options: dict) -> dict:
    """Features of one batch of tiles; tiles whose pixels cannot be decoded are left out and listed."""
    from .._image import UnreadableImageError

    ids = instance_key(rows)
    try:
        return _encode_rows(sdata, rows, specs, table_key=table_key, options=options, skipped=[])
    except UnreadableImageError as err:
        bad = _unreadable(sdata, rows, specs, table_key=table_key)
        if not bad or len(bad) == rows.n_obs:
            raise  # not a few bad tiles: the whole image (or something else) is broken
        logger.warning("%d tiles of this batch cannot be decoded (%s); skipping them.", len(bad), err)
        readable = rows[~rows.obs[ids].isin(bad).to_numpy()]
        return _encode_rows(sdata, readable, specs, table_key=table_key, options=options, skipped=bad)


def _encode_rows(sdata, rows, specs: dict, *, table_key: str, options: dict, skipped: list[str]) -> dict:
    from ..pp import image_features

    sub = with_table(sdata, table_key, rows.copy())
    for key, spec in specs.items():
        _quiet(image_features)(
            sub,
            encoder=spec["encoder"],
            patch_um=spec["patch_um"],
            working_mpp=spec["working_mpp"],
            key_added=key,
            table_key=table_key,
            progress=False,
            **options,
        )
    table = sub.tables[table_key]
    params = {}
    for key in specs:
        entry = dict(table.uns[key]["params"])
        speed = entry.get("patches_per_s") or 0.0
        entry["seconds"] = table.n_obs / speed if speed else 0.0
        entry["n"] = table.n_obs
        params[key] = entry
    return {
        "ids": table.obs[instance_key(table)].to_numpy().astype(str),
        "skipped": np.asarray(skipped, dtype=str),
        "features": {key: np.asarray(table.obsm[key], dtype=np.float32) for key in specs},
        "params": params,
    }


def _unreadable(sdata: SpatialData, rows, specs: dict, *, table_key: str) -> list[str]:
    """Ids of the tiles whose patch (at any of the model's patch sizes) cannot be decoded."""
    from .._image import PatchDataset, UnreadableImageError
    from ..encoders import get_encoder_spec
    from ..pp._features import patch_reader
    from ..pp._patches import patch_layout

    sub = with_table(sdata, table_key, rows.copy())
    bad: set[str] = set()
    for spec in specs.values():
        input_px = get_encoder_spec(spec["encoder"]).input_px
        layout = patch_layout(
            sub, spec["patch_um"], input_px=input_px, table_key=table_key, working_mpp=spec["working_mpp"]
        )
        dataset = PatchDataset(layout, patch_reader(sub, layout), out_px=input_px)
        for index, spot in enumerate(layout.spot_ids):
            try:
                dataset.patch(index)
            except UnreadableImageError:
                bad.add(str(spot))
    return sorted(bad)


def _merged_params(parts: list[dict]) -> dict:
    """One ``uns`` params entry for features computed in batches: counts summed, speed over all batches."""
    merged = {k: v for k, v in parts[0].items() if k not in ("seconds", "n")}
    seconds, n = sum(p["seconds"] for p in parts), sum(p["n"] for p in parts)
    merged["n_padded"] = int(sum(p.get("n_padded", 0) for p in parts))
    merged["patches_per_s"] = n / seconds if seconds > 0 else None
    return merged


def _add_patches(sdata: SpatialData, specs: dict, table_key: str) -> list[str]:
    """The patch shapes :func:`image_features` would write, for all tiles at once."""
    from ..pp._patches import add_patch_shapes, patch_layout

    keys = []
    for spec in {s["patch_um"]: s for s in specs.values()}.values():
        layout = patch_layout(sdata, spec["patch_um"], input_px=1, table_key=table_key)
        keys.append(_quiet(add_patch_shapes)(sdata, layout))
    return keys


#: Version of the checkpoint files; a folder of another version is refused like another run's.
