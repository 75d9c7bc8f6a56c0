"""Patient-level tables of predicted expression for survival analysis, and a cross-validated Cox model."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from .._constants import TABLE_KEY
from .._docs import doc_params
from .._logging import format_ids, logger
from .._sdata import common_genes, get_table, predictions
from .._validate import check_count

if TYPE_CHECKING:
    from spatialdata import SpatialData

AGGREGATES: tuple[str, ...] = ("mean", "topk", "tumor_mean")
TUMOR_KEY = "tumor"


@doc_params
def survival_table(
    sdatas: SpatialData | Mapping[str, SpatialData] | Sequence[SpatialData],
    clinical: pd.DataFrame | None = None,
    *,
    patient_key: str = "patient",
    key: str | None = None,
    aggregate: Literal["mean", "topk", "tumor_mean"] = "mean",
    genes: Sequence[str] | None = None,
    top_k: int = 10,
    time_col: str = "time",
    event_col: str = "event",
    signatures: Mapping[str, Sequence[str]] | None = None,
    table_key: str = TABLE_KEY,
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
        A table of patients with ``time_col`` and ``event_col``, indexed by patient id or with a
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
    time_col, event_col
        Survival time and event indicator (1 / True = event observed) columns of ``clinical``.
    signatures
        Named gene sets, name -> genes: a column ``"{name}_score"`` with the mean of the set's predicted
        genes per spot, aggregated like the genes (genes not predicted are skipped and logged).
    {table_key}

    Returns
    -------
    A DataFrame indexed by patient id (named ``patient_key``) with ``n_sections``, ``n_spots``,
    ``tumor_fraction`` (share of tumor among the spots with a known ``obs["tumor"]``, when every
    section has it), the gene and
    signature columns, and with ``clinical`` its ``time_col`` and ``event_col``. Writes nothing into the
    sections; save it with :func:`write_survival_table`.
    """
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
        outcome = _clinical(clinical, patient_key, time_col, event_col, spots[patient_key].unique())

    grouped = spots.groupby(patient_key, sort=True)
    table = pd.DataFrame(
        {"n_sections": grouped["_section"].nunique(), "n_spots": grouped.size()},
    )
    if TUMOR_KEY in spots:
        table["tumor_fraction"] = grouped[TUMOR_KEY].mean().astype(np.float64)
    table = table.join(_aggregate(spots, features, patient_key, aggregate, top_k))
    table.index = table.index.astype(str).rename(patient_key)
    if clinical is not None:
        table = table.join(outcome[[time_col, event_col]], how="inner")
    return table


def _spot_frame(sdatas, patient_key: str, key, genes, table_key: str) -> pd.DataFrame:
    """Every spot of every section: its predicted genes, patient, section and (if known) tumor call."""
    from .._sdata import named_sections

    sections = named_sections(sdatas, table_key)
    parts = []
    for name, sd in sections.items():
        table = get_table(sd, table_key)
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
    shared = common_genes([p.drop(columns=[patient_key, "_section"]) for p in parts])
    shared = [g for g in shared if g != TUMOR_KEY]
    if genes is not None:
        missing = pd.Index(genes).difference(shared)
        if len(missing):
            msg = f"{len(missing)} genes are not predicted in every section: {format_ids(missing)}."
            raise KeyError(msg)
        shared = list(genes)
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
    clinical: pd.DataFrame, patient_key: str, time_col: str, event_col: str, patients
) -> pd.DataFrame:
    """The clinical table indexed by patient id (str), checked to hold every patient and both outcomes."""
    if not isinstance(clinical, pd.DataFrame):
        msg = f"`clinical` must be a pandas DataFrame, got {type(clinical).__name__}."
        raise TypeError(msg)
    missing_cols = [c for c in (time_col, event_col) if c not in clinical.columns]
    if missing_cols:
        msg = (
            f"The clinical table lacks {missing_cols}; its columns: {list(clinical.columns)}. "
            "Pass `time_col=` / `event_col=`."
        )
        raise KeyError(msg)
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
    if not pd.api.types.is_numeric_dtype(table[time_col]) or (table[time_col] < 0).any():
        msg = f"clinical[{time_col!r}] must hold non-negative numbers (survival times)."
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
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        if suffix == ".csv":
            table.to_csv(staging)
        else:
            table.to_parquet(staging)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return path


@dataclass
class CoxResult:
    """Results of :func:`cox`.

    Attributes
    ----------
    summary
        lifelines' summary of the model fitted on all rows (coefficients, hazard ratios, CIs, p-values).
    fold_cindex
        Harrell's C-index of the held-out rows of each cross-validation fold.
    cindex_mean
        Mean of ``fold_cindex``.
    cindex_oof
        C-index of all out-of-fold risk scores together (each row scored by the model that did not see it).
    cindex_ci
        Bootstrap 95% interval of ``cindex_oof``: rows resampled with replacement, the out-of-fold
        scores kept (the models are not refitted).
    oof_risk
        Out-of-fold partial hazard of each row used (index of ``table``): higher = earlier event; e.g. for
        ``ht.pl.km(table.join(result.oof_risk), risk_col="oof_risk")``.
    covariates
        The covariates used.
    n, n_events
        Rows (patients) and observed events used.
    model
        The fitted ``lifelines.CoxPHFitter`` on all rows.
    """

    summary: pd.DataFrame
    fold_cindex: np.ndarray
    cindex_mean: float
    cindex_oof: float
    cindex_ci: tuple[float, float]
    oof_risk: pd.Series = field(repr=False)
    covariates: list[str]
    n: int
    n_events: int
    model: Any = field(repr=False)


def cox(
    table: pd.DataFrame,
    *,
    duration_col: str = "time",
    event_col: str = "event",
    covariates: Sequence[str] | None = None,
    penalizer: float = 0.1,
    l1_ratio: float = 0.0,
    n_splits: int = 5,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> CoxResult:
    """Fit a penalised Cox proportional hazards model and estimate its cross-validated C-index.

    lifelines' ``CoxPHFitter`` standardises the covariates internally, so the penalty treats them alike.
    Folds are stratified by event (every fold holds events). Rows with a missing value in the used
    columns are left out (logged).

    Parameters
    ----------
    table
        One row per patient, e.g. from :func:`survival_table`.
    duration_col, event_col
        Survival time and event indicator (1 = event observed).
    covariates
        Columns to model; default: every numeric column but the duration and event.
    penalizer
        Strength of the elastic-net penalty (lifelines' ``penalizer``).
    l1_ratio
        Share of L1 in the penalty (0: ridge, 1: lasso).
    n_splits
        Cross-validation folds.
    n_bootstrap
        Bootstrap resamples of the out-of-fold C-index.
    seed
        Seed of the folds and the bootstrap.

    Returns
    -------
    A :class:`CoxResult`; writes nothing.
    """
    from lifelines import CoxPHFitter
    from sklearn.model_selection import KFold, StratifiedKFold

    data, covariates = _cox_data(table, duration_col, event_col, covariates)
    n_splits = check_count(n_splits, "n_splits")
    n_bootstrap = check_count(n_bootstrap, "n_bootstrap")
    n_events = int(data[event_col].sum())
    if not 2 <= n_splits <= len(data):
        msg = f"`n_splits` must lie between 2 and the {len(data)} complete rows, got {n_splits}."
        raise ValueError(msg)
    # stratify by event when both classes can fill every fold, else plain shuffled folds
    strata = data[event_col].to_numpy(dtype=int)
    splitter = StratifiedKFold if min(n_events, len(data) - n_events) >= n_splits else KFold
    folds = splitter(n_splits=n_splits, shuffle=True, random_state=seed).split(data, strata)
    risk = np.empty(len(data))
    fold_cindex = []
    columns = [*covariates, duration_col, event_col]
    for train, test in folds:
        fitter = CoxPHFitter(penalizer=penalizer, l1_ratio=l1_ratio)
        fitter.fit(data.iloc[train][columns], duration_col=duration_col, event_col=event_col)
        risk[test] = fitter.predict_partial_hazard(data.iloc[test][covariates]).to_numpy()
        fold_cindex.append(_cindex(data.iloc[test], risk[test], duration_col, event_col))
    model = CoxPHFitter(penalizer=penalizer, l1_ratio=l1_ratio)
    model.fit(data[columns], duration_col=duration_col, event_col=event_col)
    rng = np.random.default_rng(seed)
    boot = [
        _cindex(data.iloc[rows], risk[rows], duration_col, event_col)
        for rows in rng.integers(0, len(data), size=(n_bootstrap, len(data)))
    ]
    fold_cindex = np.asarray(fold_cindex)
    return CoxResult(
        summary=model.summary,
        fold_cindex=fold_cindex,
        cindex_mean=float(np.nanmean(fold_cindex)),
        cindex_oof=_cindex(data, risk, duration_col, event_col),
        cindex_ci=(float(np.nanpercentile(boot, 2.5)), float(np.nanpercentile(boot, 97.5))),
        oof_risk=pd.Series(risk, index=data.index, name="oof_risk"),
        covariates=covariates,
        n=len(data),
        n_events=n_events,
        model=model,
    )


def _cox_data(table, duration_col: str, event_col: str, covariates) -> tuple[pd.DataFrame, list[str]]:
    """The rows and columns a Cox fit uses, checked; rows with missing values left out."""
    if not isinstance(table, pd.DataFrame):
        msg = f"`table` must be a pandas DataFrame, got {type(table).__name__}."
        raise TypeError(msg)
    missing = [c for c in (duration_col, event_col) if c not in table.columns]
    if missing:
        msg = (
            f"The table lacks the survival columns {missing}; its columns: {list(table.columns)[:10]}. "
            "Pass `duration_col=` / `event_col=`."
        )
        raise KeyError(msg)
    if covariates is None:
        numeric = table.select_dtypes(include=["number", "bool"]).columns
        covariates = [c for c in numeric if c not in (duration_col, event_col)]
    covariates = list(covariates)
    absent = [c for c in covariates if c not in table.columns]
    if not covariates or absent:
        msg = (
            f"No usable covariates ({'missing: ' + str(absent) if absent else 'none numeric'}) in the table."
        )
        raise KeyError(msg)
    data = table[[*covariates, duration_col, event_col]].astype(np.float64)
    complete = data.dropna()
    if len(complete) < len(data):
        logger.info("cox: %d rows with missing values left out", len(data) - len(complete))
    if not complete[event_col].isin([0, 1]).all():
        msg = f"table[{event_col!r}] must hold 0/1 or booleans (1 = event observed)."
        raise ValueError(msg)
    if complete[event_col].sum() < 1:
        msg = f"table[{event_col!r}] holds no event; a Cox model needs observed events."
        raise ValueError(msg)
    return complete, covariates


def _cindex(data: pd.DataFrame, risk: np.ndarray, duration_col: str, event_col: str) -> float:
    """Harrell's C-index of risk scores (higher = earlier event); NaN without a comparable pair."""
    from lifelines.utils import concordance_index

    try:
        return float(concordance_index(data[duration_col], -risk, data[event_col]))
    except ZeroDivisionError:
        return float("nan")
