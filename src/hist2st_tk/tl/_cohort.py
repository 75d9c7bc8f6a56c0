"""Predict expression on a cohort of H&E-only slides: one ``.zarr`` per slide and a patient-level table,
slides run one after the other or on dask workers."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .._constants import PATIENT_KEY, TABLE_KEY, predicted_key
from .._files import atomic_write
from .._logging import format_ids, logger
from .._validate import check_count
from ._slide import feature_specs, predict_slide

if TYPE_CHECKING:
    from spatialdata import SpatialData

    from ..models import Predictor

#: Files a cohort run writes into ``out_dir`` besides the slides' stores.
REPORT_FILE = "cohort_report.csv"
PATIENTS_FILE = "patients.csv"
#: Columns of the report of :func:`predict_cohort`.
REPORT_COLUMNS = ("slide", "path", "patient", "status", "n_tiles", "n_skipped", "seconds", "error", "zarr")


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
    from ..models import resolve
    from ..pp._tiles import check_fraction

    checked = resolve(model)  # a saved model is loaded here once, to fail early when it cannot be
    feature_specs(checked)
    n_workers = check_count(n_workers, "n_workers")
    if mpp is not None:
        mpp = check_mpp(mpp)
    # checked here, so that a bad value fails the call, not every slide
    check_microns(tile_um, "tile_um")
    if stride_um is not None:
        check_microns(stride_um, "stride_um")
    check_fraction(min_tissue)
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
    _write_patients(report, out, key=predicted_key(checked.method))
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
            result = slide_results(path, model, sample=name, patient=patient, checkpoint_dir=chunks, **options)
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


def slide_results(
    path: str | Path,
    model,
    *,
    sample: str | None = None,
    patient: str | None = None,
    mpp: float | None = None,
    checkpoint_dir: str | Path | None = None,
    tile_um: float = 112.0,
    stride_um: float | None = None,
    min_tissue: float = 0.5,
    batch_tiles: int = 4096,
    batch_size: int = 32,
    device: str = "auto",
) -> SpatialData:
    """One slide file read (:func:`~hist2st_tk.io.read_wsi`), tiled (:func:`~hist2st_tk.pp.tile_tissue`) and
    predicted (:func:`predict_slide`): a SpatialData of its tiles, table and ``attrs``, without the image
    (``attrs["hist2st_tk"]["slide"]`` names the file). What ``hist2st slide`` and every slide of
    :func:`predict_cohort` run."""
    from .._sdata import without_images
    from ..io import read_wsi
    from ..pp import tile_tissue

    sdata = read_wsi(path, mpp=mpp, sample=sample)
    tile_tissue(sdata, tile_um=tile_um, stride_um=stride_um, min_tissue=min_tissue, patient=patient)
    if sdata.tables[TABLE_KEY].n_obs:
        predict_slide(
            sdata,
            model,
            batch_tiles=batch_tiles,
            checkpoint_dir=checkpoint_dir,
            batch_size=batch_size,
            device=device,
        )
    return without_images(sdata)


def _stored_tiles(store: Path) -> int:
    """Tiles in a slide's store, from its ``obs`` alone (not its predictions and features)."""
    import anndata as ad
    import zarr

    group = zarr.open_group(str(store / "tables" / TABLE_KEY), mode="r")
    return len(ad.io.read_elem(group["obs"]))


def _write_patients(report: pd.DataFrame, out: Path, *, key: str) -> None:
    """The patient-level table of the slides with predictions, via ``survival_table``."""
    from spatialdata import read_zarr

    from ._patients import survival_table, write_survival_table

    finished = report[report["status"].isin(["done", "already_done"]) & (report["n_tiles"] > 0)]
    if finished.empty:
        logger.warning("No slide has predictions; %s is not written.", PATIENTS_FILE)
        return
    sdatas = [read_zarr(path) for path in finished["zarr"]]
    table = survival_table(sdatas, clinical=None, patient_key=PATIENT_KEY, key=key)
    write_survival_table(table, out / PATIENTS_FILE)
    logger.info("wrote the patients' table (%d patients) to %s", len(table), out / PATIENTS_FILE)
