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
    batch's features are saved there, and a later call with the same tiles, model inputs and
    ``batch_tiles`` loads them instead of computing them again: **what is resumed is the feature
    extraction of finished batches**; the prediction (cheap) runs again on all tiles. A checkpoint folder
    written for other tiles or another model is refused. Then :func:`predict_expression` writes the
    predictions.

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
        Folder for the features of finished batches; ``None`` keeps nothing on disk.
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
    checkpoint = _Checkpoint.open(checkpoint_dir, _fingerprint(sdata, table, specs, batch_tiles))

    starts = range(0, table.n_obs, batch_tiles)
    batches, n_resumed = [], 0
    for number, first in enumerate(starts):
        batch = checkpoint.load(number) if checkpoint is not None else None
        if batch is None:
            rows = table[first : first + batch_tiles]
            batch = _batch_features(sdata, rows, specs, table_key=table_key, options=options)
            if checkpoint is not None:
                checkpoint.save(number, batch)
            logger.info(
                "slide tiles %d-%d of %d: features in %.1f s",
                first + 1,
                first + len(rows),
                table.n_obs,
                sum(p["seconds"] for p in batch["params"].values()) / max(len(specs), 1),
            )
        else:
            n_resumed += 1
        batches.append(batch)

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
        "n_batches": len(starts),
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


def _fingerprint(sdata: SpatialData, table, specs: dict, batch_tiles: int) -> str:
    """What a checkpoint's batches depend on: the image (its slide file, size and scale), the tiles (ids and
    centres), the model's inputs and the batching."""
    from .._constants import ATTRS_KEY
    from .._sdata import image_levels, resolve_image_key, section_image_key

    key = resolve_image_key(sdata, section_image_key(sdata, table))
    slide = dict(sdata.attrs.get(ATTRS_KEY, {}).get("slide", {}).get(key, {}))
    if "path" in slide and Path(slide["path"]).is_file():  # a replaced file is another image
        stat = Path(slide["path"]).stat()
        slide["file"] = [stat.st_size, stat.st_mtime_ns]
    image = {
        "key": key,
        "shape": list(image_levels(sdata.images[key])[0].shape),
        "mpp": sdata.attrs.get(ATTRS_KEY, {}).get("mpp", {}).get(key),
        "slide": slide,
    }
    digest = hashlib.sha256()
    described = {"image": image, "specs": specs, "batch_tiles": batch_tiles}
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    digest.update("\n".join(table.obs[_instance_key(table)].astype(str)).encode())
    if "spatial" in table.obsm:
        digest.update(np.ascontiguousarray(np.asarray(table.obsm["spatial"], dtype=np.float64)).tobytes())
    return digest.hexdigest()


class _Checkpoint:
    """A folder of finished batches (``batch_00000.npz`` ...) and the manifest naming the run they belong to."""

    def __init__(self, folder: Path):
        self.folder = folder

    @classmethod
    def open(cls, folder: str | Path | None, fingerprint: str) -> _Checkpoint | None:
        if folder is None:
            return None
        folder = Path(folder)
        manifest = folder / MANIFEST_FILE
        if folder.exists() and not folder.is_dir():
            msg = f"`checkpoint_dir` {str(folder)!r} is a file; give a folder."
            raise FileExistsError(msg)
        if folder.is_dir() and any(folder.iterdir()):
            recorded = json.loads(manifest.read_text()).get("fingerprint") if manifest.is_file() else None
            if recorded != fingerprint:
                msg = (
                    f"The checkpoint folder {str(folder)!r} holds other content (another slide, other tiles, "
                    "another model's inputs or another `batch_tiles`); give an empty or dedicated folder, or "
                    "delete it to start over."
                )
                raise FileExistsError(msg)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(manifest, json.dumps({"fingerprint": fingerprint}).encode())
        return cls(folder)

    def _path(self, number: int) -> Path:
        return self.folder / f"batch_{number:05d}.npz"

    def load(self, number: int) -> dict | None:
        path = self._path(number)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as stored:
            params = json.loads(str(stored["params"]))
            return {
                "ids": stored["ids"],
                "skipped": stored["skipped"],
                "features": {key: stored[f"features/{key}"] for key in params},
                "params": params,
            }

    def save(self, number: int, batch: dict) -> None:
        import io

        buffer = io.BytesIO()
        arrays = {f"features/{key}": value for key, value in batch["features"].items()}
        params = json.dumps(batch["params"], default=_plain)
        np.savez(buffer, ids=batch["ids"], skipped=batch["skipped"], params=np.asarray(params), **arrays)
        atomic_write(self._path(number), buffer.getvalue())


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
