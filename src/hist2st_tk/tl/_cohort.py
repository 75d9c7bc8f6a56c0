"""Predict expression on whole-slide images: one slide streamed tile batch by tile batch, or a cohort of slides.

A slide is processed in batches of tiles; the image features of every finished batch are saved to a
checkpoint folder (one ``.npz`` per batch, written atomically), so that an interrupted run resumes where
it stopped. The predictor itself is cheap next to the encoder and runs once, on all tiles, at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import TABLE_KEY
from .._files import atomic_write
from .._logging import format_ids, log_added, logger
from .._sdata import get_table, with_table
from .._validate import check_count
from ..pp._model_features import model_features

if TYPE_CHECKING:
    from spatialdata import SpatialData

    from ..models import Predictor

#: Written into the checkpoint folder; a folder whose manifest differs belongs to another run.
MANIFEST_FILE = "manifest.json"
#: Files a cohort run writes into ``out_dir`` besides the slides' stores.
REPORT_FILE = "cohort_report.csv"
PATIENTS_FILE = "patients.csv"
#: Columns of the report of :func:`predict_cohort`.
REPORT_COLUMNS = ("slide", "path", "patient", "status", "n_tiles", "n_skipped", "seconds", "error", "zarr")


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
    key_added
        Name of the predictions; by default ``"predicted_{method}"``.
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
    from ._predict import warn_if_unsuitable

    start = time.perf_counter()
    model = _as_predictor(model)
    specs = feature_specs(model)
    warn_if_unsuitable(sdata, model, table_key=table_key)
    batch_tiles = check_count(batch_tiles, "batch_tiles")
    table = get_table(sdata, table_key)
    if table.n_obs == 0:
        msg = (
            f"Table {table_key!r} has no tiles to predict on; `ht.pp.tile_tissue(sdata)` makes them "
            "(a slide where it finds no tissue has none)."
        )
        raise ValueError(msg)
    options = {"weights": weights, "batch_size": batch_size, "num_workers": num_workers, "device": device}
    checkpoint = None
    if checkpoint_dir is not None:
        checkpoint = _Checkpoint.open(checkpoint_dir, _fingerprint(sdata, table, specs, batch_tiles))
    batches, n_resumed = _stream_batches(
        sdata, table, specs, checkpoint, batch_tiles=batch_tiles, table_key=table_key, options=options
    )

    kept = np.concatenate([b["ids"] for b in batches])
    skipped = [str(i) for b in batches for i in b["skipped"]]
    new_table = table[table.obs[_instance_key(table)].isin(kept).to_numpy()].copy()
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
    pred_key = key_added or f"predicted_{model.method}"
    log_added(f"{table_key} predictions {pred_key!r} (X, obsm, uns)", predicted.shape)
    log_added(f"{table_key}.uns['predict_slide']")
    return predicted


def _stream_batches(
    sdata: SpatialData,
    table,
    specs: dict,
    checkpoint: _Checkpoint | None,
    *,
    batch_tiles: int,
    table_key: str,
    options: dict,
) -> tuple[list[dict], int]:
    """The features of every batch of ``batch_tiles`` rows, in table order, and how many batches were
    loaded from ``checkpoint`` (the others are computed, and saved there)."""
    ids = table.obs[_instance_key(table)].to_numpy().astype(str)
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


def _as_predictor(model):
    from ..models import Predictor

    if isinstance(model, (str, Path)):
        return Predictor.load(model)
    if not isinstance(model, Predictor) or not model.is_fitted:
        msg = f"`model` must be a fitted predictor or the directory of a saved one, got {model!r}."
        raise TypeError(msg)
    return model


def _predict_expression(*args, **kwargs):
    from ._predict import predict_expression

    return predict_expression(*args, **kwargs)


def _instance_key(table) -> str:
    from spatialdata.models import get_table_keys

    return get_table_keys(table)[2]


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
    from ..pp._patches import UnreadableImageError

    instance_key = _instance_key(rows)
    try:
        return _encode_rows(sdata, rows, specs, table_key=table_key, options=options, skipped=[])
    except UnreadableImageError as err:
        bad = _unreadable(sdata, rows, specs, table_key=table_key)
        if not bad or len(bad) == rows.n_obs:
            raise  # not a few bad tiles: the whole image (or something else) is broken
        logger.warning("%d tiles of this batch cannot be decoded (%s); skipping them.", len(bad), err)
        readable = rows[~rows.obs[instance_key].isin(bad).to_numpy()]
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
        "ids": table.obs[_instance_key(table)].to_numpy().astype(str),
        "skipped": np.asarray(skipped, dtype=str),
        "features": {key: np.asarray(table.obsm[key], dtype=np.float32) for key in specs},
        "params": params,
    }


def _unreadable(sdata: SpatialData, rows, specs: dict, *, table_key: str) -> list[str]:
    """Ids of the tiles whose patch (at any of the model's patch sizes) cannot be decoded."""
    from ..encoders import get_encoder_spec
    from ..pp._features import _reader
    from ..pp._patches import PatchDataset, UnreadableImageError, patch_layout

    sub = with_table(sdata, table_key, rows.copy())
    bad: set[str] = set()
    for spec in specs.values():
        input_px = get_encoder_spec(spec["encoder"]).input_px
        layout = patch_layout(
            sub, spec["patch_um"], input_px=input_px, table_key=table_key, working_mpp=spec["working_mpp"]
        )
        dataset = PatchDataset(layout, _reader(sub, layout), out_px=input_px)
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
_CHECKPOINT_FORMAT = 2
#: Images up to this many bytes are hashed whole for the fingerprint, larger ones through a sample.
_HASHED_WHOLE_BYTES = 16 * 1024**2
#: Blocks a small image is hashed in, so that an undecodable block costs only itself.
_HASH_BLOCK_PX = 1024
#: The sample of a larger image: windows of _WINDOW_PX on a _WINDOW_GRID^2 grid and at up to _WINDOW_TILES tiles.
_WINDOW_PX = 64
_WINDOW_GRID = 4
_WINDOW_TILES = 16
#: Zarr metadata files: their size and mtime identify an image store without listing its chunks.
_ZARR_METADATA = (".zgroup", ".zarray", ".zattrs", "zarr.json")


def _fingerprint(sdata: SpatialData, table, specs: dict, batch_tiles: int) -> str:
    """What a checkpoint's batches depend on: the image (its files on disk, size, scale and a hash of its
    pixels), the tiles (ids and centres), the model's inputs and the batching."""
    from .._sdata import image_levels, resolve_image_key, section_image_key, spot_centres

    key = resolve_image_key(sdata, section_image_key(sdata, table))
    pixels = image_levels(sdata.images[key])[0].data
    _, centres = spot_centres(sdata, table)
    described = {
        "format": _CHECKPOINT_FORMAT,
        "image": _image_identity(sdata, key),
        "pixels": _pixel_digest(pixels, _pixel_windows(pixels, centres)),
        "specs": specs,
        "batch_tiles": batch_tiles,
    }
    digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode())
    digest.update("\n".join(table.obs[_instance_key(table)].astype(str)).encode())
    digest.update(np.ascontiguousarray(centres, dtype=np.float64).tobytes())
    return digest.hexdigest()


def _image_identity(sdata: SpatialData, key: str) -> dict:
    """The image's name, shape, dtype and scale, and the identity of the files it is read from."""
    from .._constants import ATTRS_KEY
    from .._sdata import image_levels

    level = image_levels(sdata.images[key])[0]
    attrs = sdata.attrs.get(ATTRS_KEY, {})
    slide = dict(attrs.get("slide", {}).get(key, {}))
    files = {}
    if "path" in slide:  # a slide file rewritten in place is another image
        files["slide"] = _file_identity(Path(slide["path"]))
    if sdata.path is not None:  # so is a store written again
        files["store"] = _store_identity(Path(str(sdata.path)) / "images" / key)
    return {
        "key": key,
        "shape": list(level.shape),
        "dtype": str(level.dtype),
        "mpp": attrs.get("mpp", {}).get(key),
        "slide": slide,
        "files": files,
    }


def _file_identity(path: Path) -> list | None:
    """``[size, mtime_ns]`` of a file, ``None`` when it is gone."""
    if not path.is_file():
        return None
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _store_identity(folder: Path) -> list:
    """Size and mtime of the zarr metadata of an image in a store (its group and each level's array).

    Writing the store again rewrites them; reading them never lists the image's (many) chunk files.
    """
    if not folder.is_dir():
        return []
    found = []
    for directory in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        for name in _ZARR_METADATA:
            identity = _file_identity(directory / name)
            if identity is not None:
                found.append([str((directory / name).relative_to(folder)), *identity])
    return found


def _pixel_windows(image, centres: np.ndarray) -> list[tuple[slice, slice]]:
    """The regions of a full-resolution ``(c, y, x)`` image that its fingerprint hashes.

    A small image (up to :data:`_HASHED_WHOLE_BYTES`) is hashed whole, block by block. A larger one
    through a fixed sample: small windows on a regular grid and at the centres (``(n, 2)``, x/y pixels) of
    a few tiles picked evenly in table order, which lie on tissue where a grid may see only glass. A
    100,000 px slide then costs a few dozen small reads.
    """
    height, width = (int(n) for n in image.shape[-2:])
    if image.size * np.dtype(image.dtype).itemsize <= _HASHED_WHOLE_BYTES:
        step = _HASH_BLOCK_PX
        return [
            (slice(y, min(y + step, height)), slice(x, min(x + step, width)))
            for y in range(0, height, step)
            for x in range(0, width, step)
        ]
    grid = (np.arange(_WINDOW_GRID) + 0.5) / _WINDOW_GRID
    points = [(fy * height, fx * width) for fy in grid for fx in grid]
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    centres = centres[np.isfinite(centres).all(axis=1)]
    picked = np.unique(np.linspace(0, len(centres) - 1, min(len(centres), _WINDOW_TILES)).round().astype(int))
    points += [(y, x) for x, y in centres[picked]]
    # a lazy image is read whole chunks at a time: keep each window inside one chunk
    rows, columns = getattr(image, "chunks", ((), (height,), (width,)))[-2:]
    return [(_span(y, height, np.cumsum(rows)), _span(x, width, np.cumsum(columns))) for y, x in points]


def _span(centre: float, length: int, chunk_ends: np.ndarray) -> slice:
    """:data:`_WINDOW_PX` pixels around ``centre``, moved inside the axis and, when it fits, one chunk."""
    start = min(max(round(centre - _WINDOW_PX / 2), 0), max(length - _WINDOW_PX, 0))
    chunk = int(np.searchsorted(chunk_ends, start, side="right"))
    if chunk < len(chunk_ends):
        begin = int(chunk_ends[chunk - 1]) if chunk else 0
        start = max(min(start, int(chunk_ends[chunk]) - _WINDOW_PX), begin)
    return slice(start, min(start + _WINDOW_PX, length))


def _pixel_digest(image, windows: list[tuple[slice, slice]]) -> str:
    """SHA-256 of the pixels of ``image`` (numpy or dask, ``(c, y, x)``) in ``windows``, read one by one."""
    digest = hashlib.sha256(str(np.dtype(image.dtype)).encode())
    for ys, xs in windows:
        digest.update(_window_bytes(image, ys, xs))
    return digest.hexdigest()


def _window_bytes(image, ys: slice, xs: slice) -> bytes:
    """The pixels of one window as bytes; a fixed marker when they cannot be decoded."""
    try:
        return np.ascontiguousarray(np.asarray(image[..., ys, xs])).tobytes()
    except Exception:  # decoders raise many types; a region that cannot be decoded is so on every run
        return b"undecodable"


class _Checkpoint:
    """A folder of finished batches (``batch_00000.npz`` ...) and the manifest naming the run they belong to.

    Each batch file also holds the run's fingerprint and the ids of its tiles; a file that cannot be read,
    belongs to another run or holds other tiles is never used: its batch is computed again.
    """

    def __init__(self, folder: Path, fingerprint: str):
        self.folder = folder
        self.fingerprint = fingerprint

    @classmethod
    def open(cls, folder: str | Path, fingerprint: str) -> _Checkpoint:
        """The checkpoint in ``folder``, created when missing or empty; refused when it is another run's."""
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            msg = f"`checkpoint_dir` {str(folder)!r} is a file; give a folder."
            raise FileExistsError(msg)
        if folder.is_dir() and any(folder.iterdir()):
            if _recorded_fingerprint(folder) != fingerprint:
                msg = (
                    f"The checkpoint folder {str(folder)!r} holds other content (another slide or other pixels, "
                    "other tiles, another model's inputs, another `batch_tiles` or an older version's files); "
                    "give an empty or dedicated folder, or delete it to start over."
                )
                raise FileExistsError(msg)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / MANIFEST_FILE, json.dumps({"fingerprint": fingerprint}).encode())
        return cls(folder, fingerprint)

    def _path(self, number: int) -> Path:
        return self.folder / f"batch_{number:05d}.npz"

    def load(self, number: int, rows: np.ndarray) -> dict | None:
        """Batch ``number``, whose tiles are ``rows``, from its file; ``None`` when there is none or it
        cannot be used (logged with the file's name: the batch is computed again and the file replaced)."""
        path = self._path(number)
        if not path.is_file():
            return None
        try:
            batch = _read_batch(path)
        except Exception as err:  # a truncated or damaged file raises zipfile, numpy or json errors alike
            problem = f"cannot be read ({type(err).__name__}: {err})"
        else:
            problem = self._mismatch(batch, number, rows)
            if problem is None:
                return batch
        logger.warning("The checkpoint batch %s %s; computing it again.", path, problem)
        return None

    def _mismatch(self, batch: dict, number: int, rows: np.ndarray) -> str | None:
        """Why a stored batch is not batch ``number`` of this run, or ``None`` when it is."""
        if batch["fingerprint"] != self.fingerprint:
            return "belongs to another run (its fingerprint is not the manifest's)"
        if not np.array_equal(batch["rows"], rows):
            return f"holds other tiles than batch {number} ({_first_difference(batch['rows'], rows)})"
        kept = rows[~np.isin(rows, batch["skipped"])]
        lengths = {len(values) for values in batch["features"].values()}
        if not np.array_equal(batch["ids"], kept) or lengths - {len(kept)}:
            return "is inconsistent (its features do not match its tiles)"
        return None

    def save(self, number: int, batch: dict, rows: np.ndarray) -> None:
        """Write batch ``number`` (tiles ``rows``) atomically, with the run's fingerprint."""
        import io

        buffer = io.BytesIO()
        arrays = {f"features/{key}": value for key, value in batch["features"].items()}
        np.savez(
            buffer,
            fingerprint=np.asarray(self.fingerprint),
            rows=np.asarray(rows, dtype=str),
            ids=batch["ids"],
            skipped=batch["skipped"],
            params=np.asarray(json.dumps(batch["params"], default=_plain)),
            **arrays,
        )
        atomic_write(self._path(number), buffer.getvalue())


def _recorded_fingerprint(folder: Path) -> str | None:
    """The fingerprint in a checkpoint folder's manifest, ``None`` without one; a damaged one is refused.

    The manifest is written atomically, so a damaged one was damaged outside this package: the batches
    beside it cannot be told to belong to this run, and the folder is left for the user to delete.
    """
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        return None
    try:
        fingerprint = json.loads(manifest.read_bytes())["fingerprint"]
        problem = None if isinstance(fingerprint, str) else "its fingerprint is not text"
    except (ValueError, KeyError, TypeError) as err:  # not text, not JSON, or not a manifest
        problem = f"{type(err).__name__}: {err}"
    if problem is not None:
        msg = (
            f"The checkpoint manifest {str(manifest)!r} is damaged ({problem}), so the batches beside it "
            f"cannot be matched to this run; delete the folder {str(folder)!r} to start again."
        )
        raise ValueError(msg)
    return fingerprint


def _read_batch(path: Path) -> dict:
    """A batch file's content, read whole (the file is closed on return, even when it is damaged)."""
    with path.open("rb") as handle, np.load(handle, allow_pickle=False) as stored:
        params = json.loads(str(stored["params"]))
        return {
            "fingerprint": str(stored["fingerprint"]),
            "rows": stored["rows"],
            "ids": stored["ids"],
            "skipped": stored["skipped"],
            "features": {key: stored[f"features/{key}"] for key in params},
            "params": params,
        }


def _first_difference(stored: np.ndarray, rows: np.ndarray) -> str:
    """Where the tile ids stored in a batch file first differ from the batch's tiles."""
    for got, want in zip(stored, rows, strict=False):
        if got != want:
            return f"{str(got)!r} where {str(want)!r} is expected"
    return f"{len(stored)} tiles where {len(rows)} are expected"


def _plain(value):
    """JSON for numpy scalars and arrays in ``uns`` params."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    msg = f"Cannot store {type(value).__name__} in a checkpoint."
    raise TypeError(msg)


def predict_cohort(
    paths: Sequence[str | Path],
    model: Predictor | str | Path,
    *,
    out_dir: str | Path,
    client=None,
    n_workers: int = 1,
    patient_of: Mapping[str, str] | Callable[[str], str] | None = None,
    mpp: float | None = None,
    tile_um: float = 112.0,
    stride_um: float | None = None,
    min_tissue: float = 0.5,
    batch_tiles: int = 4096,
    batch_size: int = 32,
    device: str = "auto",
    overwrite: bool = False,
) -> pd.DataFrame:
    """Predict expression on a cohort of H&E-only slides, one ``.zarr`` per slide and a patient-level table.

    Each slide goes through :func:`hist2st_tk.io.read_wsi`, :func:`hist2st_tk.pp.tile_tissue` and
    :func:`predict_slide` (features of the encoder and patch size the model was trained on, from
    ``model.inputs``), and is written to ``out_dir/{slide}.zarr`` with
    :func:`hist2st_tk.io.write_zarr`: its tiles, table (predictions in ``X``) and ``attrs``, **without the
    image** (``attrs["hist2st_tk"]["slide"]`` names the slide file). A slide that fails is reported with
    its error and the others go on; a slide with no tissue gets a store with an empty table.
    At the end, the patients' table of the finished slides is written with
    :func:`hist2st_tk.tl.survival_table` (one row per ``obs["patient"]``, mean predictions) to
    ``out_dir/patients.csv``, and the report to ``out_dir/cohort_report.csv``.

    Where slides run:

    - ``client``: a :class:`dask.distributed.Client` (of any cluster); one task per slide.
    - ``client=None, n_workers > 1``: a :class:`~dask.distributed.LocalCluster` of ``n_workers`` processes
      with one thread each, started and closed here; each worker's torch uses ``cpus / n_workers`` threads.
    - ``client=None, n_workers=1`` (default): one slide after the other in this process, no dask.

    Resuming: a slide whose store is already in ``out_dir`` is not processed again (status
    ``"already_done"``) unless ``overwrite=True``, which replaces it; a slide interrupted mid-way resumes
    from its finished tile batches (kept in ``out_dir/.{slide}.chunks`` until its store is written).
    ``out_dir`` holding anything else than this cohort's results is refused.

    Parameters
    ----------
    paths
        Slide files (see :func:`hist2st_tk.io.read_wsi`); a slide is named by its file name without
        extension, and names must be distinct.
    model
        A fitted predictor reading image features, or the directory of a saved one (workers load it).
    out_dir
        Folder of the results; created when missing.
    client
        A dask.distributed client to run the slides on.
    n_workers
        Worker processes of the local cluster started when ``client`` is ``None``; 1 runs in this process.
    patient_of
        Patient of each slide: a mapping or a function of the slide name; by default the slide name.
    mpp
        Microns per pixel of every slide, overriding their metadata; ``None`` reads it from each slide
        (a slide without it then fails, with that error in the report).
    tile_um, stride_um, min_tissue
        The tile grid (see :func:`hist2st_tk.pp.tile_tissue`).
    batch_tiles, batch_size, device
        Streaming of the features (see :func:`predict_slide`).
    overwrite
        Process again and replace slides whose store exists.

    Returns
    -------
    The report, one row per slide in the order of ``paths``: ``slide``, ``path``, ``patient``, ``status``
    (``"done"``, ``"already_done"``, ``"no_tissue"`` or ``"failed"``), ``n_tiles``, ``n_skipped`` (tiles
    that could not be decoded), ``seconds``, ``error`` (the exception of a failed slide) and ``zarr``.
    """
    from .._scale import check_mpp
    from .._validate import check_microns
    from ..pp._tiles import _check_fraction

    checked = _as_predictor(model)  # a saved model is loaded here once, to fail early when it cannot be
    feature_specs(checked)
    n_workers = check_count(n_workers, "n_workers")
    if mpp is not None:
        mpp = check_mpp(mpp)
    # checked here, so that a bad value fails the call, not every slide
    check_microns(tile_um, "tile_um")
    if stride_um is not None:
        check_microns(stride_um, "stride_um")
    _check_fraction(min_tissue)
    check_count(batch_tiles, "batch_tiles")
    check_count(batch_size, "batch_size")
    slides = _slide_names(paths)
    patients = {name: _patient(patient_of, name) for name in slides}
    out = _prepare_out_dir(out_dir, list(slides))
    options = {
        "mpp": mpp,
        "tile_um": tile_um,
        "stride_um": stride_um,
        "min_tissue": min_tissue,
        "batch_tiles": batch_tiles,
        "batch_size": batch_size,
        "device": device,
    }
    jobs = [
        {
            "path": str(path),
            "name": name,
            "patient": patients[name],
            "out_dir": str(out),
            "overwrite": overwrite,
        }
        for name, path in slides.items()
    ]
    payload = str(model) if isinstance(model, (str, Path)) else checked
    if client is not None:
        records = _run_on(client, jobs, payload, options, torch_threads=None)
    elif n_workers > 1:
        from distributed import Client, LocalCluster

        threads = max(1, (os.cpu_count() or 1) // n_workers)
        with (
            LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as local,
        ):
            records = _run_on(local, jobs, payload, options, torch_threads=threads)
    else:
        records = [_run_slide(**job, model=payload, options=options, torch_threads=None) for job in jobs]

    report = pd.DataFrame(records, columns=list(REPORT_COLUMNS))
    atomic_write(out / REPORT_FILE, report.to_csv(index=False).encode())
    _write_patients(report, out, key=f"predicted_{checked.method}")
    counts = report["status"].value_counts().to_dict()
    logger.info("cohort of %d slides: %s; report in %s", len(report), counts, out / REPORT_FILE)
    return report


def _slide_names(paths: Sequence[str | Path]) -> dict[str, Path]:
    """``{slide name: path}``, refusing an empty cohort and names that clash or cannot name elements."""
    from ..io._elements import check_sample_name
    from ..io._wsi import slide_name

    if isinstance(paths, (str, Path)) or not len(paths):
        msg = "`paths` must be a non-empty list of slide files."
        raise ValueError(msg)
    slides: dict[str, Path] = {}
    for path in map(Path, paths):
        name = check_sample_name(slide_name(path))
        if name in slides:
            msg = f"Two slides are named {name!r} ({str(slides[name])!r} and {str(path)!r}); slide names must be distinct."
            raise ValueError(msg)
        slides[name] = path
    return slides


def _patient(patient_of, name: str) -> str:
    if patient_of is None:
        return name
    if callable(patient_of):
        return str(patient_of(name))
    if name not in patient_of:
        msg = f"`patient_of` has no patient for slide {name!r}; it maps {format_ids(list(patient_of))}."
        raise KeyError(msg)
    return str(patient_of[name])


def _prepare_out_dir(out_dir: str | Path, names: list[str]) -> Path:
    """``out_dir``, created; refused when it holds anything but this cohort's results."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        msg = f"`out_dir` {str(out)!r} is a file; give a folder."
        raise FileExistsError(msg)
    out.mkdir(parents=True, exist_ok=True)
    ours = {REPORT_FILE, PATIENTS_FILE} | {f"{n}.zarr" for n in names} | {f".{n}.chunks" for n in names}
    staging = tuple(f".{n}" for n in ours)  # temporary names of atomic writes
    unknown = [p.name for p in out.iterdir() if p.name not in ours and not p.name.startswith(staging)]
    if unknown:
        msg = (
            f"`out_dir` {str(out)!r} holds entries that are not results of this cohort: {format_ids(sorted(unknown))}. "
            "Use an empty or dedicated folder (results are never overwritten silently)."
        )
        raise FileExistsError(msg)
    return out


def _run_on(client, jobs: list[dict], model, options: dict, *, torch_threads: int | None) -> list[dict]:
    """Run one task per slide on a dask.distributed client; a lost task is reported as a failed slide."""
    from distributed import as_completed

    # the model goes to the cluster once, not once per task
    shared = client.scatter(model, broadcast=True) if not isinstance(model, str) else model
    futures = {
        client.submit(
            _run_slide,
            **job,
            model=shared,
            options=options,
            torch_threads=torch_threads,
            key=f"hist2st-slide-{job['name']}-{uuid.uuid4().hex[:8]}",
            pure=False,
        ): job
        for job in jobs
    }
    records = {}
    for future in as_completed(futures):
        job = futures[future]
        try:
            records[job["name"]] = future.result()
        except Exception as err:  # the worker died (memory, signal): the slide failed, the cohort goes on
            logger.error("slide %r failed on the cluster: %s", job["name"], err)
            records[job["name"]] = _record(job, status="failed", error=f"{type(err).__name__}: {err}")
    return [records[job["name"]] for job in jobs]


def _record(job: dict, **fields) -> dict:
    """A report row; ``zarr`` names the slide's store, ``None`` for a failed slide (it has none)."""
    failed = fields.get("status") == "failed"
    zarr = None if failed else str(Path(job["out_dir"]) / f"{job['name']}.zarr")
    base = {
        "slide": job["name"],
        "path": job["path"],
        "patient": job["patient"],
        "n_tiles": 0,
        "n_skipped": 0,
    }
    return {**dict.fromkeys(REPORT_COLUMNS), **base, "seconds": 0.0, "zarr": zarr, **fields}


def _run_slide(
    *,
    path: str,
    name: str,
    patient: str,
    out_dir: str,
    overwrite: bool,
    model,
    options: dict,
    torch_threads: int | None,
) -> dict:
    """One slide from file to ``{out_dir}/{name}.zarr``; returns its report row and never raises."""
    job = {"path": path, "name": name, "patient": patient, "out_dir": out_dir}
    store = Path(out_dir) / f"{name}.zarr"
    chunks = Path(out_dir) / f".{name}.chunks"
    if store.exists() and not overwrite:
        return _record(job, status="already_done", n_tiles=_stored_tiles(store))
    start = time.perf_counter()
    try:
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        if overwrite:
            shutil.rmtree(chunks, ignore_errors=True)
        import dask

        # on a dask worker, the slide's own lazy arrays are computed here, not sent to the cluster
        with dask.config.set(scheduler="threads"):
            result = _process_slide(path, name, patient, model, options, chunks)
        from ..io import write_zarr

        write_zarr(result, store, overwrite=overwrite)
        shutil.rmtree(chunks, ignore_errors=True)
        table = result.tables[TABLE_KEY]
        skipped = table.uns.get("predict_slide", {}).get("skipped_tiles", [])
        status = "done" if table.n_obs else "no_tissue"
        fields = {"status": status, "n_tiles": int(table.n_obs), "n_skipped": len(skipped)}
    except Exception as err:  # a failed slide is reported; the other slides go on
        logger.error("slide %r failed: %s: %s", name, type(err).__name__, err)
        fields = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
    return _record(job, **fields, seconds=time.perf_counter() - start)


def _process_slide(path: str, name: str, patient: str, model, options: dict, chunks: Path) -> SpatialData:
    """Read, tile and predict one slide; the result holds everything but the image."""
    from spatialdata import SpatialData

    from ..io import read_wsi
    from ..pp import tile_tissue

    sdata = read_wsi(path, mpp=options["mpp"], sample=name)
    tile_tissue(
        sdata,
        tile_um=options["tile_um"],
        stride_um=options["stride_um"],
        min_tissue=options["min_tissue"],
        patient=patient,
    )
    if sdata.tables[TABLE_KEY].n_obs:
        predict_slide(
            sdata,
            model,
            batch_tiles=options["batch_tiles"],
            checkpoint_dir=chunks,
            batch_size=options["batch_size"],
            device=options["device"],
        )
    return SpatialData(
        labels=dict(sdata.labels),
        shapes=dict(sdata.shapes),
        tables=dict(sdata.tables),
        attrs=dict(sdata.attrs),
    )


def _stored_tiles(store: Path) -> int:
    """Tiles in a slide's store, from its ``obs`` alone (not its predictions and features)."""
    import anndata as ad
    import zarr

    group = zarr.open_group(str(store / "tables" / TABLE_KEY), mode="r")
    return len(ad.io.read_elem(group["obs"]))


def _write_patients(report: pd.DataFrame, out: Path, *, key: str) -> None:
    """The patient-level table of the slides with predictions, via ``survival_table``."""
    from spatialdata import read_zarr

    from ._survival import survival_table, write_survival_table

    finished = report[report["status"].isin(["done", "already_done"]) & (report["n_tiles"] > 0)]
    if finished.empty:
        logger.warning("No slide has predictions; %s is not written.", PATIENTS_FILE)
        return
    sdatas = [read_zarr(path) for path in finished["zarr"]]
    table = survival_table(sdatas, clinical=None, patient_key="patient", key=key)
    write_survival_table(table, out / PATIENTS_FILE)
    logger.info("wrote the patients' table (%d patients) to %s", len(table), out / PATIENTS_FILE)
