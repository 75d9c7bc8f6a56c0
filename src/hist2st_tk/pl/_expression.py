"""Predictions on the H&E and spot by spot: expression beside its measurement, and the tumor score."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._constants import TABLE_KEY
from .._metrics import pearson_columns
from .._sdata import get_table, predictions, rows_to_spots
from .._validate import check_count
from ._spatial import _section_background, _spot_panel
from ._utils import (
    as_gene_list,
    check_predicted,
    check_save,
    finish,
    observed,
    shared_docs,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import pandas as pd
    from matplotlib.figure import Figure
    from spatialdata import SpatialData


@shared_docs
def spatial_expression(
    sdata: SpatialData,
    genes: str | Sequence[str],
    *,
    key: str | None = None,
    layer: str | None = None,
    measured: bool = True,
    table_key: str = TABLE_KEY,
    image_key: str | None = None,
    cmap: str = "viridis",
    ncols: int | None = None,
    max_image_px: int = 2000,
    crop: bool = True,
    spot_alpha: float = 0.8,
    panel_size: float = 4.0,
    save: str | Path | None = None,
    show: bool | None = None,
) -> Figure:
    """Plot predicted and measured expression on the H&E side by side, on the same colour scale.

    Each gene gets a predicted panel and, with ``measured=True``, a measured panel to its right; both
    share one colour scale (the range of the two together) and one colour bar, so that a prediction
    that is too flat or too strong shows at a glance. Spots without a value are drawn as empty outlines.

    Parameters
    ----------
    sdata
        The section.
    genes
        Genes to plot; each must be among the predicted genes (the columns of ``obsm[key]``).
    key
        The predictions, ``obsm[key]`` as written by :func:`~hist2st_tk.tl.predict_expression`
        (e.g. ``"predicted_ridge"``); by default the only, or the most recently added, ``predicted_*`` key.
    layer
        Read measured expression from ``layers[layer]`` instead of ``X``. Predictions are log-normalised
        like ``X``: another layer (e.g. ``"counts"``) puts the two on different scales.
    measured
        Draw the measured expression beside the predictions; ``False`` for an H&E-only slide.
    table_key
        The table annotating the spots.
    image_key
        The H&E image; may be omitted when there is one image.
    cmap
        Colour map.
    ncols
        Genes per row of the figure; by default one with ``measured=True``, else up to three.
    max_image_px
        The coarsest pyramid level whose longest side is at least this many pixels is drawn.
    crop
        Zoom onto the spots instead of showing the whole image.
    spot_alpha
        Opacity of the spots.
    panel_size
        Size of one panel in inches.
    {save_show}

    Returns
    -------
    The matplotlib figure; panels titled ``"{gene} predicted"`` and ``"{gene} measured"``. Writes nothing
    into ``sdata``.

    Raises
    ------
    ValueError
        When a gene was not predicted (the message lists some predicted ones), or, with ``measured=True``,
        is not measured.
    """
    import matplotlib.pyplot as plt

    names = as_gene_list(genes)
    check_save(save)
    table = get_table(sdata, table_key)
    key, _ = predictions(table, key, table_key, latest=True)
    check_predicted(names, table.obsm[key], key)
    ncols = check_count(ncols if ncols is not None else (1 if measured else min(3, len(names))), "ncols")
    measured_values = observed(table, names, key=key, layer=layer, table_key=table_key) if measured else None
    image, scale, spots = _section_background(sdata, table, image_key, max_image_px)
    frames = [rows_to_spots(table, table.obsm[key][names], spots)]
    if measured_values is not None:
        frames.append(rows_to_spots(table, measured_values, spots))

    per_gene = 2 if measured else 1
    ncols = min(ncols, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols * per_gene,
        figsize=(panel_size * ncols * (per_gene + 0.4), panel_size * nrows),
        squeeze=False,
        layout="constrained",
    )
    panels = axes.reshape(nrows * ncols, per_gene)
    for gene, row in zip(names, panels, strict=False):
        vmin, vmax = _shared_range([frame[gene] for frame in frames])
        for ax, frame, what in zip(row, frames, ("predicted", "measured"), strict=False):
            collection = _spot_panel(
                ax,
                image,
                scale,
                spots,
                frame[gene],
                cmap=cmap,
                alpha=spot_alpha,
                crop=crop,
                vmin=vmin,
                vmax=vmax,
                colorbar=False,
            )
            ax.set_title(
                f"{gene} {what}" if what == "predicted" or layer is None else f"{gene} {what} ({layer})"
            )
        fig.colorbar(collection, ax=list(row), shrink=0.7)
    for ax in panels[len(names) :].flat:
        ax.set_visible(False)
    fig.suptitle(key)
    return finish(fig, save=save, show=show)


@shared_docs
def predicted_vs_observed(
    sdata: SpatialData,
    genes: str | Sequence[str],
    *,
    key: str | None = None,
    layer: str | None = None,
    table_key: str = TABLE_KEY,
    ncols: int = 4,
    panel_size: float = 3.0,
    save: str | Path | None = None,
    show: bool | None = None,
) -> Figure:
    """Scatter predicted against measured expression, one panel per gene, with Pearson's r in the title.

    Each point is a spot; the dashed line is ``predicted == measured``.

    Parameters
    ----------
    sdata
        A section with measured expression and predictions.
    genes
        Genes to plot; each must be predicted (a column of ``obsm[key]``) and measured.
    key
        The predictions, ``obsm[key]``; by default the only, or the most recently added, ``predicted_*`` key.
    layer
        Read measured expression from ``layers[layer]`` instead of ``X``.
    table_key
        The table of spots.
    ncols
        Panels per row.
    panel_size
        Size of one panel in inches.
    {save_show}

    Returns
    -------
    The matplotlib figure; panels titled ``"{gene}  r = {pearson:.2f}"``. Writes nothing into ``sdata``.

    Raises
    ------
    ValueError
        When a gene was not predicted (the message lists some predicted ones) or is not measured.
    """
    import matplotlib.pyplot as plt

    names = as_gene_list(genes)
    ncols = check_count(ncols, "ncols")
    check_save(save)
    table = get_table(sdata, table_key)
    key, _ = predictions(table, key, table_key, latest=True)
    check_predicted(names, table.obsm[key], key)
    truth = observed(table, names, key=key, layer=layer, table_key=table_key).to_numpy()
    predicted = table.obsm[key][names].to_numpy(dtype=np.float64)
    pearson = pearson_columns(predicted, truth)

    ncols = min(ncols, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows), squeeze=False, layout="constrained"
    )
    for i, (ax, gene) in enumerate(zip(axes.flat, names, strict=False)):
        ax.scatter(truth[:, i], predicted[:, i], s=8, alpha=0.6, edgecolors="none")
        low, high = _shared_range([truth[:, i], predicted[:, i]])
        ax.plot([low, high], [low, high], linestyle="--", color="0.4", linewidth=1)
        ax.set_title(f"{gene}  r = {pearson[i]:.2f}")
        ax.set_xlabel("measured" if layer is None else f"measured ({layer})")
        ax.set_ylabel("predicted")
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(key)
    return finish(fig, save=save, show=show)


def _shared_range(values: Sequence[pd.Series | np.ndarray]) -> tuple[float | None, float | None]:
    """The finite range of several value sets together (``None`` when none is finite)."""
    pooled = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in values])
    pooled = pooled[np.isfinite(pooled)]
    if pooled.size == 0:
        return None, None
    return float(pooled.min()), float(pooled.max())


@shared_docs
def tumor_map(
    sdata: SpatialData,
    *,
    score_key: str = "tumor_score",
    label_key: str | None = "tumor",
    table_key: str = TABLE_KEY,
    image_key: str | None = None,
    cmap: str = "magma",
    max_image_px: int = 2000,
    crop: bool = True,
    spot_alpha: float = 0.8,
    panel_size: float = 4.0,
    save: str | Path | None = None,
    show: bool | None = None,
) -> Figure:
    """Plot the tumor score on the H&E, beside the tumor labels when the section has them.

    Scores in ``[0, 1]`` (probabilities) are drawn on that fixed scale. With labels, the score panel's
    title gives the AUC of the score against them (spots without a label left out).

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
    table_key
        The table annotating the spots.
    image_key
        The H&E image; may be omitted when there is one image.
    cmap
        Colour map of the score.
    max_image_px
        The coarsest pyramid level whose longest side is at least this many pixels is drawn.
    crop
        Zoom onto the spots instead of showing the whole image.
    spot_alpha
        Opacity of the spots.
    panel_size
        Size of one panel in inches.
    {save_show}

    Returns
    -------
    The matplotlib figure. Writes nothing into ``sdata``.
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    from ..tl._cross_validate import tumor_auc

    check_save(save)
    table = get_table(sdata, table_key)
    for name, column in (("score_key", score_key), ("label_key", label_key)):
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
    image, scale, spots = _section_background(sdata, table, image_key, max_image_px)
    columns = [score_key] if label_key is None else [score_key, label_key]
    values = rows_to_spots(table, table.obs[columns], spots)
    vmin, vmax = _shared_range([values[score_key]])
    if vmin is not None and vmin >= 0 and vmax <= 1:
        vmin, vmax = 0.0, 1.0

    fig, axes = plt.subplots(
        1,
        len(columns),
        figsize=(panel_size * len(columns) * 1.4, panel_size),
        squeeze=False,
        layout="constrained",
    )
    _spot_panel(
        axes[0, 0],
        image,
        scale,
        spots,
        values[score_key],
        cmap=cmap,
        alpha=spot_alpha,
        crop=crop,
        vmin=vmin,
        vmax=vmax,
    )
    title = score_key
    if label_key is not None:
        labels = values[label_key].astype("category")  # booleans and strings drawn as categories
        _spot_panel(axes[0, 1], image, scale, spots, labels, cmap=cmap, alpha=spot_alpha, crop=crop)
        axes[0, 1].set_title(label_key)
        scored = table.obs[table.obs[score_key].notna()]
        auc = (
            tumor_auc(scored, pd.DataFrame({"tumor_score": scored[score_key].to_numpy()}), label_key)
            if pd.api.types.is_bool_dtype(table.obs[label_key])
            else float("nan")
        )
        if np.isfinite(auc):
            title = f"{score_key} (AUC vs {label_key}: {auc:.2f})"
    axes[0, 0].set_title(title)
    return finish(fig, save=save, show=show)
