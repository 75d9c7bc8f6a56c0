"""A Cox proportional-hazards model of patient survival on predicted expression, cross-validated."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._logging import logger
from .._validate import check_count
from ._patients import check_outcome_columns


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
    check_outcome_columns(table, "table", duration_col, event_col)
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
