"""How good the predictions are: per-gene scores and training curves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import TABLE_KEY
from .._docs import doc_params
from .._metrics import GENE_METRICS
from .._sdata import predictions
from .._section import check_section
from .._validate import check_count
from ._utils import METRIC_NAMES, check_save, cluster_palette, finish, metric_label, title_of

if TYPE_CHECKING:
    from pathlib import Path

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData

#: Metrics where a smaller value is better; the others (correlations, R²) are better when larger.
_LOWER_IS_BETTER = frozenset({"mae", "mse"})
#: Columns of a tidy score table such as :attr:`~hist2st_tk.tl.CrossValidation.scores`.
_TIDY_COLUMNS = ("metric", "value")


@doc_params
def gene_scores(
    data: SpatialData | pd.DataFrame | Any,
    *,
    key: str | None = None,
    metric: str = "pearson",
    top: int = 20,
    groupby: str = "fold",
    table_key: str = TABLE_KEY,
    panel_size: float = 4.0,
    save: str | Path | None = None,
    show: bool | None = None,
) -> Figure:
    """Plot per-gene scores of predictions: the best genes of one section, or a comparison of folds and methods.

    Two inputs, two plots:

    - a section scored by :func:`~hist2st_tk.tl.evaluate`: horizontal bars of ``var["{key}_{metric}"]``
      for the ``top`` best genes, best on top, with the mean over all scored genes as a dashed line,
      titled ``"predicted ({method}): best {top} of {n} genes"``;
    - a tidy score table such as :attr:`CrossValidation.scores <hist2st_tk.tl.CrossValidation>` (or the
      :class:`~hist2st_tk.tl.CrossValidation` itself), with columns ``metric``, ``value`` and ``groupby``:
      one box of the per-gene values per group (e.g. fold), the mean marked; one box per method side by
      side when a ``method`` column is present (concatenate the ``scores`` of several methods, each with
      its name in ``method``, in the cluster palette of :func:`spatial`), and one panel per gene panel
      when a ``panel`` column is present.

    The metric is named in words on its axis (``"Pearson's r"``, ``"mean absolute error (log1p
    normalised counts)"``, ...), and ``groupby`` with spaces for underscores.

    Parameters
    ----------
    data
        A section (SpatialData), a tidy score DataFrame, or a :class:`~hist2st_tk.tl.CrossValidation`.
    key
        The scored predictions (sections only); by default the only, or the most recently added,
        ``predicted_*`` key.
    metric
        One of ``pearson``, ``spearman``, ``mae``, ``mse``, ``r2``.
    top
        Number of genes shown as bars (sections only).
    groupby
        Column of a score table whose values become the boxes (e.g. ``"fold"`` or ``"held_out"``).
    table_key
        The table of spots (sections only).
    panel_size
        Height of the figure (and width of one panel) in inches.
    {save_show}

    Returns
    -------
    The matplotlib figure. Writes nothing into ``data``.
    """
    from spatialdata import SpatialData

    if metric not in GENE_METRICS:
        msg = f"Unknown metric {metric!r}; use one of {list(GENE_METRICS)}."
        raise ValueError(msg)
    check_save(save)
    if isinstance(data, SpatialData):
        fig = _section_scores(data, key, metric, check_count(top, "top"), table_key, panel_size)
    else:
        scores = getattr(data, "scores", data)  # a CrossValidation holds its tidy table there
        if not isinstance(scores, pd.DataFrame):
            msg = (
                "`data` must be a SpatialData scored by `ht.tl.evaluate`, a tidy score DataFrame or a "
                f"CrossValidation; got a {type(data).__name__}."
            )
            raise TypeError(msg)
        fig = _table_scores(scores, metric, groupby, panel_size)
    return finish(fig, save=save, show=show)


def _section_scores(
    sdata: SpatialData, key: str | None, metric: str, top: int, table_key: str, panel_size: float
) -> Figure:
    import matplotlib.pyplot as plt

    table = check_section(sdata, table_key)
    key, _ = predictions(table, key, table_key, latest=True)
    column = f"{key}_{metric}"
    if column not in table.var:
        msg = f"No per-gene scores var[{column!r}] in table {table_key!r}; run `ht.tl.evaluate(sdata, key={key!r})` first."
        raise KeyError(msg)
    scores = table.var[column].dropna().sort_values(ascending=metric in _LOWER_IS_BETTER)
    if scores.empty:
        msg = f"var[{column!r}] holds no scored gene (all NaN)."
        raise ValueError(msg)
    shown = scores.iloc[:top]
    fig, ax = plt.subplots(figsize=(panel_size, max(2.0, 0.22 * len(shown) + 1.0)), layout="constrained")
    positions = np.arange(len(shown))[::-1]  # best on top
    ax.barh(positions, shown.to_numpy(), color="tab:blue")
    ax.set_yticks(positions, [str(g) for g in shown.index])
    ax.axvline(
        float(scores.mean()), color="0.3", linestyle="--", linewidth=1, label=f"mean of {len(scores)} genes"
    )
    ax.set_xlabel(metric_label(metric))
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.set_title(f"{title_of(key)}: best {len(shown)} of {len(scores)} genes")
    return fig


def _table_scores(scores: pd.DataFrame, metric: str, groupby: str, panel_size: float) -> Figure:
    import matplotlib.pyplot as plt

    missing = [c for c in (*_TIDY_COLUMNS, groupby) if c not in scores.columns]
    if missing:
        msg = f"The score table lacks columns {missing}; it has {list(scores.columns)}."
        raise KeyError(msg)
    rows = scores[scores["metric"] == metric]
    if rows.empty:
        msg = (
            f"The score table holds no {metric!r} scores; metrics there: {sorted(scores['metric'].unique())}."
        )
        raise ValueError(msg)
    panels = list(pd.unique(rows["panel"])) if "panel" in rows else [None]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(panel_size * len(panels) * 1.2, panel_size),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    for ax, panel in zip(axes.flat, panels, strict=True):
        _boxes(ax, rows if panel is None else rows[rows["panel"] == panel], groupby)
        words = METRIC_NAMES[metric]
        ax.set_title(f"{words} per gene" if panel is None else f"{panel}: {words} per gene")
    axes.flat[0].set_ylabel(metric_label(metric))
    return fig


def _boxes(ax: Axes, rows: pd.DataFrame, groupby: str) -> None:
    """One box of per-gene values per group (and per method, side by side), with the mean marked."""
    from matplotlib.patches import Patch

    groups = list(pd.unique(rows[groupby]))
    methods = list(pd.unique(rows["method"])) if "method" in rows else [None]
    width = 0.8 / len(methods)
    colours = cluster_palette(len(methods))
    handles = []
    for j, method in enumerate(methods):
        subset = rows if method is None else rows[rows["method"] == method]
        values = [subset.loc[subset[groupby] == g, "value"].dropna().to_numpy() for g in groups]
        positions = np.arange(len(groups)) + (j - (len(methods) - 1) / 2) * width
        shown = [(p, v) for p, v in zip(positions, values, strict=True) if len(v)]
        boxes = ax.boxplot(
            [v for _, v in shown],
            positions=[p for p, _ in shown],
            widths=width * 0.85,
            patch_artist=True,
            showfliers=False,
            showmeans=True,
            meanprops={
                "marker": "o",
                "markerfacecolor": "white",
                "markeredgecolor": "black",
                "markersize": 4,
            },
            medianprops={"color": "black"},
        )
        for box in boxes["boxes"]:
            box.set_facecolor(colours[j])
        handles.append(Patch(facecolor=colours[j], label=str(method)))
    ax.set_xticks(np.arange(len(groups)), [str(g) for g in groups], rotation=30, ha="right")
    ax.set_xlabel(title_of(groupby))
    if methods != [None]:
        ax.legend(handles=handles, fontsize=8, frameon=False)


@doc_params
def training_history(
    model_or_history: Any,
    *,
    log_scale: bool = False,
    panel_size: float = 4.0,
    save: str | Path | None = None,
    show: bool | None = None,
) -> Figure:
    """Plot the training and validation loss of a fitted neural predictor, epoch by epoch.

    The epoch with the lowest validation loss (whose weights the predictor keeps) is marked.

    Parameters
    ----------
    model_or_history
        A fitted predictor (its ``history``) or a history dict such as ``{"train_loss": [...],
        "val_loss": [...]}``; every list under a key ending in ``loss`` is drawn.
    log_scale
        Draw the loss on a log scale.
    panel_size
        Height of the figure in inches.
    {save_show}

    Returns
    -------
    The matplotlib figure; one line per loss, labelled by its key in words (``"train loss"``,
    ``"val loss"``). Writes nothing.

    Raises
    ------
    ValueError
        When the history holds no per-epoch loss (e.g. ``ridge``, which fits in one step).
    """
    import matplotlib.pyplot as plt

    history = getattr(model_or_history, "history", model_or_history)
    if not isinstance(history, Mapping):
        msg = f"Pass a fitted predictor or its `history` dict; got a {type(model_or_history).__name__}."
        raise TypeError(msg)
    losses = {str(k): np.asarray(v, dtype=np.float64) for k, v in history.items() if str(k).endswith("loss")}
    losses = {k: v for k, v in losses.items() if v.ndim == 1 and v.size}
    if not losses:
        msg = (
            f"The history holds no per-epoch loss (keys: {list(history)}); only neural predictors "
            "record one, `ridge` fits in one step."
        )
        raise ValueError(msg)
    check_save(save)
    fig, ax = plt.subplots(figsize=(panel_size * 1.5, panel_size), layout="constrained")
    for name, values in losses.items():
        ax.plot(np.arange(1, values.size + 1), values, marker="o", markersize=3, label=title_of(name))
    if "val_loss" in losses and np.isfinite(losses["val_loss"]).any():
        best = int(np.nanargmin(losses["val_loss"])) + 1
        ax.axvline(best, color="0.4", linestyle=":", linewidth=1, label=f"best epoch ({best})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if log_scale:
        ax.set_yscale("log")
    ax.legend(frameon=False)
    held_out = history.get("validation_section")
    ax.set_title("training history" + (f" (validation: {held_out[0]})" if held_out else ""))
    return finish(fig, save=save, show=show)
