"""Patient-level tables of predicted expression for survival analysis, and their writer."""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from .._constants import PATIENT_KEY, TABLE_KEY, TUMOR_KEY
from .._docs import doc_params
from .._files import atomic_write
from .._logging import format_ids, logger
from .._sdata import common_genes, predictions
from .._section import check_section
from .._validate import check_count

if TYPE_CHECKING:
    from spatialdata import SpatialData

AGGREGATES: tuple[str, ...] = ("mean", "topk", "tumor_mean")


@doc_params
def survival_table(
    sdatas: SpatialData | Mapping[str, SpatialData] | Sequence[SpatialData],
    clinical: pd.DataFrame | None = None,
    *,
    patient_key: str = PATIENT_KEY,
    key: str | None = None,
    aggregate: Literal["mean", "topk", "tumor_mean"] = "mean",
    genes: Sequence[str] | None = None,
    top_k: int = 10,
    duration_col: str = "time",
    event_col: str = "event",
    signatures: Mapping[str, Sequence[str]] | None = None,
    table_key: str = TABLE_KEY,
    time_col: str | None = None,
) -> pd.DataFrame:
    """One row per patient of aggregated predicted expression, joined with clinical survival data.

    The spots of all sections of a patient are pooled. Feature columns are the genes, aggregated by

    - ``"mean"``: mean predicted expression over the patient's spots;
    - ``"topk"``: mean of the ``top_k`` highest spot values per gene (HE2RNA's top-k pooling: a signal
      confined to a small region is not averaged away);
    - ``"tumor_mean"``: mean over the spots of ``obs["tumor"]`` (see :func:`tumor_regions`); NaN for a
      patient without tumor spots.

    Parameters
    ----------
    sdatas
        Sections with predictions: one SpatialData, a list or a dict name -> SpatialData.
    clinical
        A table of patients with ``duration_col`` and ``event_col``, indexed by patient id or with a
        ``patient_key`` column; ids are compared as strings. ``None``: features only.
    patient_key
        ``obs`` column of patient ids (use ``"sample"`` to treat sections as pseudo-patients).
    key
        The predictions, ``obsm[key]``; default: each table's only ``predicted_*`` key.
    aggregate
        How spots are pooled per patient: ``"mean"``, ``"topk"`` or ``"tumor_mean"``.
    genes
        Genes to keep; default: every gene predicted in all sections.
    top_k
        Number of spots per gene for ``aggregate="topk"`` (all of a patient's spots when it has fewer).
    duration_col, event_col
        Survival time and event indicator (1 / True = event observed) columns of ``clinical``; the
        names :func:`cox` and :func:`hist2st_tk.pl.km` (and lifelines) use.
    signatures
        Named gene sets, name -> genes: a column ``"{name}_score"`` with the mean of the set's predicted
        genes per spot, aggregated like the genes (genes not predicted are skipped and logged).
    {table_key}
    time_col
        Deprecated name of ``duration_col``.

    Returns
    -------
    A DataFrame indexed by patient id (named ``patient_key``) with ``n_sections``, ``n_spots``,
    ``tumor_fraction`` (share of tumor among the spots with a known ``obs["tumor"]``, when every
    section has it), the gene and
    signature columns, and with ``clinical`` its ``duration_col`` and ``event_col``. Writes nothing into the
    sections; save it with :func:`write_survival_table`.
    """
    if time_col is not None:
        warnings.warn("`time_col` is deprecated; pass `duration_col`.", FutureWarning, stacklevel=2)
        duration_col = time_col
    if aggregate not in AGGREGATES:
        msg = f"Unknown `aggregate` {aggregate!r}; choose one of {list(AGGREGATES)}."
        raise ValueError(msg)
    top_k = check_count(top_k, "top_k")
    spots = _spot_frame(sdatas, patient_key, key, genes, table_key)
    if aggregate == "tumor_mean" and TUMOR_KEY not in spots:
        msg = "`aggregate='tumor_mean'` needs obs['tumor'] in every section; run `ht.tl.tumor_regions` first."
        raise KeyError(msg)
    gene_columns = [c for c in spots.columns if c not in (patient_key, "_section", TUMOR_KEY)]
    for name, gene_set in (signatures or {}).items():
        spots[f"{name}_score"] = spots[_signature_genes(name, gene_set, gene_columns)].mean(axis=1)
    features = [c for c in spots.columns if c not in (patient_key, "_section", TUMOR_KEY)]
    if clinical is not None:
        outcome = _clinical(clinical, patient_key, duration_col, event_col, spots[patient_key].unique())

    grouped = spots.groupby(patient_key, sort=True)
    table = pd.DataFrame(
        {"n_sections": grouped["_section"].nunique(), "n_spots": grouped.size()},
    )
    if TUMOR_KEY in spots:
        table["tumor_fraction"] = grouped[TUMOR_KEY].mean().astype(np.float64)
    table = table.join(_aggregate(spots, features, patient_key, aggregate, top_k))
    table.index = table.index.astype(str).rename(patient_key)
    if clinical is not None:
        table = table.join(outcome[[duration_col, event_col]], how="inner")
    return table


def _spot_frame(sdatas, patient_key: str, key, genes, table_key: str) -> pd.DataFrame:
    """Every spot of every section: its predicted genes, patient, section and (if known) tumor call."""
    from .._sdata import named_sections

    sections = named_sections(sdatas, table_key)
    parts = []
    for name, sd in sections.items():
        table = check_section(sd, table_key)
        _, frame = predictions(table, key, table_key)
        if patient_key not in table.obs:
            msg = f"Section {name!r} has no obs[{patient_key!r}]; obs columns: {list(table.obs.columns)}."
            raise KeyError(msg)
        part = frame.reset_index(drop=True)
        part[patient_key] = table.obs[patient_key].astype(str).to_numpy()
        part["_section"] = name
        if TUMOR_KEY in table.obs:
            part[TUMOR_KEY] = table.obs[TUMOR_KEY].astype("boolean").to_numpy()
        parts.append(part)
    shared = common_genes(
        [p.drop(columns=[patient_key, "_section", TUMOR_KEY], errors="ignore") for p in parts], genes
    )
    has_tumor = all(TUMOR_KEY in p for p in parts)
    columns = [*shared, patient_key, "_section", *([TUMOR_KEY] if has_tumor else [])]
    return pd.concat([p[columns] for p in parts], ignore_index=True)


def _signature_genes(name: str, gene_set: Sequence[str], predicted: list[str]) -> list[str]:
    present = [g for g in gene_set if g in predicted]
    skipped = [g for g in gene_set if g not in predicted]
    if not present:
        msg = f"No gene of signature {name!r} is predicted: {format_ids(gene_set)}."
        raise ValueError(msg)
    if skipped:
        logger.info("signature %r: skipped %s (not predicted)", name, format_ids(skipped))
    return present


def _clinical(
    clinical: pd.DataFrame, patient_key: str, duration_col: str, event_col: str, patients
) -> pd.DataFrame:
    """The clinical table indexed by patient id (str), checked to hold every patient and both outcomes."""
    check_outcome_columns(clinical, "clinical", duration_col, event_col)
    table = clinical.set_index(patient_key) if patient_key in clinical.columns else clinical
    table = table.set_axis(table.index.astype(str))
    if table.index.duplicated().any():
        msg = f"The clinical table lists patients twice: {format_ids(table.index[table.index.duplicated()])}."
        raise ValueError(msg)
    absent = pd.Index(patients).difference(table.index)
    if len(absent):
        msg = (
            f"{len(absent)} patients of the data are not in the clinical table: {format_ids(absent, 10)}; "
            f"it lists e.g. {format_ids(table.index)}."
        )
        raise KeyError(msg)
    if not pd.api.types.is_numeric_dtype(table[duration_col]) or (table[duration_col] < 0).any():
        msg = f"clinical[{duration_col!r}] must hold non-negative numbers (survival times)."
        raise ValueError(msg)
    if not table[event_col].dropna().isin([0, 1]).all():
        msg = f"clinical[{event_col!r}] must hold 0/1 or booleans (1 = event observed)."
        raise ValueError(msg)
    return table


def _aggregate(
    spots: pd.DataFrame, features: list[str], patient_key: str, how: str, top_k: int
) -> pd.DataFrame:
    if how == "tumor_mean":
        inside = spots[spots[TUMOR_KEY].fillna(value=False).to_numpy(dtype=bool)]
        result = inside.groupby(patient_key)[features].mean()
        without = pd.Index(spots[patient_key].unique()).difference(result.index)
        if len(without):
            logger.info(
                "survival_table: no tumor spot for patients %s; their features are NaN", format_ids(without)
            )
        return result
    grouped = spots.groupby(patient_key)[features]
    if how == "mean":
        return grouped.mean()
    return grouped.agg(lambda column: column.nlargest(top_k).mean())


def write_survival_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a patient table to CSV or Parquet (by the suffix), atomically.

    Parameters
    ----------
    table
        A table from :func:`survival_table`.
    path
        Destination ending in ``.csv``, ``.parquet`` or ``.pq``; written to a temporary file beside it,
        then renamed into place, so a failed write leaves no partial file.

    Returns
    -------
    The path written. The index (patient ids) is written as a column.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        msg = f"Cannot tell the format of {str(path)!r}: use a path ending in .csv, .parquet or .pq."
        raise ValueError(msg)
    if not isinstance(table, pd.DataFrame):
        msg = f"`table` must be a pandas DataFrame, got {type(table).__name__}."
        raise TypeError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        data = table.to_csv().encode()
    else:
        buffer = io.BytesIO()
        table.to_parquet(buffer)
        data = buffer.getvalue()
    atomic_write(path, data)
    return path


def check_outcome_columns(frame: pd.DataFrame, name: str, duration_col: str, event_col: str) -> None:
    """Raise unless the argument ``name`` is a DataFrame holding both survival outcome columns."""
    if not isinstance(frame, pd.DataFrame):
        msg = f"`{name}` must be a pandas DataFrame, got {type(frame).__name__}."
        raise TypeError(msg)
    missing = [c for c in (duration_col, event_col) if c not in frame.columns]
    if missing:
        msg = (
            f"`{name}` lacks the survival columns {missing}; its columns: {format_ids(frame.columns)}. "
            "Pass `duration_col=` / `event_col=`."
        )
        raise KeyError(msg)
