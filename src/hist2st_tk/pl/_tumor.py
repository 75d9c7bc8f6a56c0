"""The tumor score on the H&E, beside the tumor labels and the mean score per region label."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._constants import TABLE_KEY, TUMOR_SCORE_KEY
from .._docs import doc_params
from .._sdata import get_table, rows_to_spots
from ._expression import shared_range
from ._spatial import section_background, spot_panel
from ._utils import MISSING_COLOUR, category_colours, check_save, check_scale_bar, finish, title_of, unit_of

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData

#: Default legend title of ``tumor_map``'s labels: HER2ST's are the data authors' annotation of
#: expression clusters, not a pathologist's outline of the tumor.
AUTHORS_LABELS = "region label (data authors')"
#: Finer annotation whose mean scores ``tumor_map`` shows when the table has it (HER2ST's).
REGION_KEY = "region_label"


@doc_params
def tumor_map(
    sdata: SpatialData,
    *,
    score_key: str = TUMOR_SCORE_KEY,
    label_key: str | None = "tumor",
    label_title: str | None = AUTHORS_LABELS,
    region_key: str | None = None,
    table_key: str = TABLE_KEY,
    image_key: str | None = None,
    cmap: str = "magma",
    max_image_px: int = 2000,
    crop: bool = True,
    spot_alpha: float = 0.8,
    scale_bar: bool | float = True,
    panel_size: float = 4.0,
    save: str | Path | None = None,
    show: bool | None = None,
) -> Figure:
    """Plot the tumor score on the H&E, beside the tumor labels and the mean score per region label.

    Scores in ``[0, 1]`` (probabilities) are drawn on that fixed scale, with a colour bar labelled
    ``"tumor probability"`` (``"tumor marker signature (logistic)"`` for a score of
    :func:`~hist2st_tk.tl.tumor_regions` without a classifier). With labels, the score panel's title
    gives the AUC of the score against them (spots without a label left out), the labels are drawn in a
    second panel (in the label palette of :func:`spatial`: True red, False light blue) and a third
    panel gives the mean score of each region label (bars coloured by the region's most frequent label,
    spot counts beside the names), which shows where the score goes wrong: e.g. a non-tumor region that
    scores high.

    HER2ST's labels (``obs["tumor"]`` and ``obs["region_label"]`` of :func:`~hist2st_tk.datasets.her2st`)
    are the data authors' annotation of expression clusters, not a pathologist's outline of the tumor:
    the legend says so by default (``label_title``). Change it for labels of another origin, e.g. those
    :func:`~hist2st_tk.tl.tumor_regions` calls from the score itself.

    Parameters
    ----------
    sdata
        The section.
    score_key
        Numeric ``obs`` column of the score, e.g. ``tumor_score`` written by
        :func:`~hist2st_tk.tl.predict_expression` for predictors with a tumor head.
    label_key
        ``obs`` column of the labels drawn in a second panel (e.g. the boolean ``tumor`` of
        :func:`~hist2st_tk.datasets.her2st`); ``None`` for the score alone.
    label_title
        Title of the labels' legend, saying where the labels come from; ``None`` for none.
    region_key
        Categorical ``obs`` column whose mean scores the third panel shows; by default ``region_label``
        when the table has it (HER2ST), else ``label_key``. Unused with ``label_key=None``.
    table_key
        The table annotating the spots.
    {image_key}
    cmap
        Colour map of the score.
    {max_image_px}
    crop
        Zoom onto the spots instead of showing the whole image.
    {spot_alpha}
    {scale_bar}
    {panel_size}
    {save_show}

    Returns
    -------
    The matplotlib figure: the score panel titled with the score in words and, on a second line,
    ``"AUC vs {labels}: {auc:.2f}"`` (e.g. ``"tumor score"`` over ``"AUC vs tumor: 0.81"``), the labels
    panel and the bars of the mean score per region label. Writes nothing into ``sdata``.

    Raises
    ------
    KeyError
        When ``score_key``, ``label_key`` or ``region_key`` is not an ``obs`` column.
    TypeError
        When the score is not numeric, or ``label_title`` not a string.
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    from .._metrics import tumor_auc

    if label_title is not None and not isinstance(label_title, str):
        msg = f"`label_title` must be a string or None, got a {type(label_title).__name__}."
        raise TypeError(msg)
    scale_bar = check_scale_bar(scale_bar)
    check_save(save)
    table = get_table(sdata, table_key)
    if label_key is None:
        region_key = None  # no labels, no bars
    elif region_key is None:
        region_key = REGION_KEY if REGION_KEY in table.obs else label_key
    for name, column in (("score_key", score_key), ("label_key", label_key), ("region_key", region_key)):
        if column is not None and column not in table.obs:
            msg = (
                f"No obs[{column!r}] (`{name}`) in table {table_key!r}; obs columns: {list(table.obs.columns)}."
                + (" Pass `label_key=None` to plot the score alone." if name == "label_key" else "")
            )
            raise KeyError(msg)
    if not pd.api.types.is_numeric_dtype(table.obs[score_key]) or pd.api.types.is_bool_dtype(
        table.obs[score_key]
    ):
        msg = f"obs[{score_key!r}] must hold numeric scores, got dtype {table.obs[score_key].dtype}."
        raise TypeError(msg)
    background = section_background(sdata, table, image_key, max_image_px, scale_bar=scale_bar)
    columns = [score_key] if label_key is None else [score_key, label_key]
    values = rows_to_spots(table, table.obs[columns], background.spots)
    vmin, vmax = shared_range([values[score_key]])
    if vmin is not None and vmin >= 0 and vmax <= 1:
        vmin, vmax = 0.0, 1.0
    unit = unit_of(score_key, gene=False, table=table)

    widths = [1.4] * len(columns) + ([1.2] if label_key is not None else [])
    fig, axes = plt.subplots(
        1,
        len(widths),
        figsize=(panel_size * sum(widths), panel_size),
        squeeze=False,
        width_ratios=widths,
        layout="constrained",
    )
    spot_panel(
        axes[0, 0],
        background,
        values[score_key],
        cmap=cmap,
        alpha=spot_alpha,
        crop=crop,
        vmin=vmin,
        vmax=vmax,
        label=unit,
    )
    title = title_of(score_key)
    if label_key is not None:
        labels = values[label_key].astype("category")  # booleans and strings drawn as categories
        spot_panel(
            axes[0, 1],
            background,
            labels,
            cmap=cmap,
            alpha=spot_alpha,
            crop=crop,
            labels=True,
            legend_title=label_title,
        )
        axes[0, 1].set_title(title_of(label_key))
        scored = table.obs[table.obs[score_key].notna()]
        auc = (
            tumor_auc(scored, pd.DataFrame({TUMOR_SCORE_KEY: scored[score_key].to_numpy()}), label_key)
            if pd.api.types.is_bool_dtype(table.obs[label_key])
            else float("nan")
        )
        if np.isfinite(auc):
            title = f"{title}\nAUC vs {title_of(label_key)}: {auc:.2f}"
        _region_means(
            axes[0, 2],
            scored,
            score_key,
            region_key,
            label_key,
            category_colours(labels, labels=True),
            unit=unit,
            limits=(vmin, vmax),
        )
    axes[0, 0].set_title(title)
    return finish(fig, save=save, show=show)


def _region_score_means(obs: pd.DataFrame, score_key: str, region_key: str) -> pd.DataFrame:
    """Mean score (``mean``) and number of scored spots (``n``) per region label, highest mean first.

    Spots without a score or a region label are left out.
    """
    import pandas as pd

    known = obs[obs[score_key].notna() & obs[region_key].notna()]
    regions = known[region_key].astype("object")
    stats = known[score_key].astype(float).groupby(regions).agg(["mean", "size"])
    stats = stats.rename(columns={"size": "n"}).sort_values("mean", ascending=False, kind="stable")
    return pd.DataFrame(stats)


def _region_means(
    ax: Axes,
    obs: pd.DataFrame,
    score_key: str,
    region_key: str,
    label_key: str,
    colours: dict,
    *,
    unit: str,
    limits: tuple[float | None, float | None],
) -> None:
    """Horizontal bars of the mean score per region label, highest on top, coloured by the region's most
    frequent label (grey without one), each with its value."""
    stats = _region_score_means(obs, score_key, region_key)
    if region_key == label_key:
        colour = {region: colours.get(region, MISSING_COLOUR) for region in stats.index}
    else:
        known = obs[obs[label_key].notna() & obs[region_key].notna()]
        majority = (
            known[label_key]
            .astype("object")
            .groupby(known[region_key].astype("object"))
            .agg(lambda v: v.value_counts().index[0])
        )
        colour = {r: colours.get(majority.get(r), MISSING_COLOUR) for r in stats.index}
    positions = np.arange(len(stats))[::-1]  # highest mean on top
    ax.barh(positions, stats["mean"].to_numpy(), color=[colour[r] for r in stats.index])
    ax.set_yticks(
        positions, [f"{r} (n={n})" for r, n in zip(stats.index, stats["n"], strict=True)], fontsize=8
    )
    for y, mean in zip(positions, stats["mean"], strict=True):
        ax.text(mean, y, f" {mean:.2f}", va="center", fontsize=8)
    low, high = limits
    if low is not None and (low, high) == (0.0, 1.0):
        ax.set_xlim(0, 1.15)  # room for the values beside the bars
    ax.set_xlabel(f"mean {unit}")
    ax.set_title(f"mean score by {title_of(region_key)}")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
