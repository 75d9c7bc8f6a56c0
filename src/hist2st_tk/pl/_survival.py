"""Kaplan-Meier curves of patient groups, with the log-rank test."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from .._docs import doc_params
from .._validate import check_count
from ._utils import check_save, cluster_palette, finish, title_of

if TYPE_CHECKING:
    from pathlib import Path

    from matplotlib.figure import Figure

#: Column of the groups that :func:`km` draws (added to a copy, never to the caller's table).
_GROUP = "_km_group"


@doc_params
def km(
    table: pd.DataFrame,
    *,
    duration_col: str = "time",
    event_col: str = "event",
    groupby: str | None = None,
    risk_col: str | None = None,
    n_groups: int = 2,
    ci: bool = True,
    title: str | None = None,
    panel_size: float = 4.0,
    save: str | Path | None = None,
    show: bool | None = None,
) -> Figure:
    """Plot Kaplan-Meier survival curves by group, with the log-rank p-value in the title.

    Groups come from a column (``groupby``), or from quantiles of a continuous risk score
    (``risk_col``): with ``n_groups=2`` the patients below and above the median risk (``"low risk"``,
    ``"high risk"``), else ``"risk Q1"`` (lowest) to ``"risk Q{n}"``. The p-value is that of the
    log-rank test of equal survival in all groups (lifelines' ``multivariate_logrank_test``). Groups take
    the cluster palette of :func:`spatial`; the time axis is labelled by ``duration_col`` in words.

    Parameters
    ----------
    table
        One row per patient, e.g. from ``ht.tl.survival_table``.
    duration_col
        Column of the follow-up time (non-negative).
    event_col
        Column of the event indicator: 1/True when the event (e.g. death) was observed, 0/False when censored.
    groupby
        Column of the groups; exclusive with ``risk_col``. Rows without a group are left out.
    risk_col
        Numeric column of a risk score, cut into ``n_groups`` quantile groups; exclusive with ``groupby``.
    n_groups
        Number of quantile groups of ``risk_col``.
    ci
        Draw the 95% confidence band of each curve.
    title
        Title before the p-value.
    panel_size
        Height of the figure in inches.
    {save_show}

    Returns
    -------
    The matplotlib figure; one curve per group, labelled ``"{group} (n={patients})"``. Writes nothing
    into ``table``.
    """
    import matplotlib.pyplot as plt
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import multivariate_logrank_test

    data = _survival_groups(
        table, duration_col, event_col, groupby, risk_col, check_count(n_groups, "n_groups")
    )
    check_save(save)
    test = multivariate_logrank_test(data[duration_col], data[_GROUP], data[event_col])
    fig, ax = plt.subplots(figsize=(panel_size * 1.5, panel_size), layout="constrained")
    groups = data[_GROUP].cat.categories
    for colour, group in zip(cluster_palette(len(groups)), groups, strict=True):
        rows = data[data[_GROUP] == group]
        fitter = KaplanMeierFitter().fit(
            rows[duration_col], event_observed=rows[event_col], label=f"{group} (n={len(rows)})"
        )
        fitter.plot_survival_function(ax=ax, ci_show=ci, color=colour)
    ax.set_xlabel(title_of(duration_col))
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{title + ': ' if title else ''}log-rank p = {test.p_value:.3g}")
    return finish(fig, save=save, show=show)


def _survival_groups(
    table: pd.DataFrame,
    duration_col: str,
    event_col: str,
    groupby: str | None,
    risk_col: str | None,
    n_groups: int,
) -> pd.DataFrame:
    """Duration, event (0/1) and a categorical group per patient, checked; a new frame."""
    if not isinstance(table, pd.DataFrame):
        msg = f"`table` must be a DataFrame with one row per patient, got a {type(table).__name__}."
        raise TypeError(msg)
    if (groupby is None) == (risk_col is None):
        msg = "Pass exactly one of `groupby` (a column of groups) and `risk_col` (a column of risk scores)."
        raise ValueError(msg)
    column = groupby if groupby is not None else risk_col
    missing = [c for c in (duration_col, event_col, column) if c not in table.columns]
    if missing:
        msg = f"The table lacks columns {missing}; it has {list(table.columns)}."
        raise KeyError(msg)
    durations = pd.to_numeric(table[duration_col], errors="coerce")
    if durations.isna().any() or (durations < 0).any():
        bad = table.index[durations.isna() | (durations < 0)]
        msg = f"{len(bad)} rows have a missing or negative {duration_col!r}, e.g. rows {list(bad[:5])}."
        raise ValueError(msg)
    events = table[event_col]
    if events.isna().any() or not events.isin([0, 1]).all():
        msg = f"{event_col!r} must hold 1/True (event) or 0/False (censored) for every row; got {sorted(map(str, events.unique()))[:5]}."
        raise ValueError(msg)
    groups = (
        _risk_groups(table[risk_col], n_groups) if risk_col is not None else table[groupby].astype("category")
    )
    data = pd.DataFrame({duration_col: durations, event_col: events.astype(int), _GROUP: groups})
    data = data[data[_GROUP].notna()]
    data[_GROUP] = data[_GROUP].cat.remove_unused_categories()
    if len(data[_GROUP].cat.categories) < 2:
        msg = f"Kaplan-Meier curves need at least two groups; {column!r} gives {list(data[_GROUP].cat.categories)}."
        raise ValueError(msg)
    return data


def _risk_groups(risk: pd.Series, n_groups: int) -> pd.Series:
    """Quantile groups of a risk score, lowest risk first."""
    if n_groups < 2:
        msg = f"`n_groups` must be at least 2 to compare groups, got {n_groups}."
        raise ValueError(msg)
    values = pd.to_numeric(risk, errors="coerce")
    if values.notna().sum() < n_groups:
        msg = f"{risk.name!r} has {values.notna().sum()} numeric values, too few for {n_groups} groups."
        raise ValueError(msg)
    labels = ["low risk", "high risk"] if n_groups == 2 else [f"risk Q{i + 1}" for i in range(n_groups)]
    try:
        return pd.qcut(values, n_groups, labels=labels)
    except ValueError as err:  # tied scores leave some quantile bins empty
        msg = (
            f"Cannot cut {risk.name!r} into {n_groups} quantile groups: too many tied scores make "
            "quantiles coincide. Use fewer groups, or `groupby` with groups of your own."
        )
        raise ValueError(msg) from err
