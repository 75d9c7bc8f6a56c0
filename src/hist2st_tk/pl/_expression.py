"""Predictions on the H&E and spot by spot: expression beside its measurement."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._constants import TABLE_KEY
from .._docs import doc_params
from .._metrics import pearson_columns
from .._sdata import get_table, predictions, rows_to_spots
from .._validate import check_count
from ._spatial import section_background, spot_panel
from ._utils import (
    EXPRESSION_UNIT,
    as_gene_list,
    check_predicted,
    check_save,
    check_scale_bar,
    finish,
    observed,
    title_of,
    unit_of,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import pandas as pd
    from matplotlib.figure import Figure
    from spatialdata import SpatialData


@doc_params
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
    scale_bar: bool | float = True,
    panel_size: float = 4.0,
    save: str | Path | None = None,
    show: bool | None = None,
) -> Figure:
    """Plot predicted and measured expression on the H&E side by side, on the same colour scale.

    Each gene gets a predicted panel and, with ``measured=True``, a measured panel to its right; both
    share one colour scale (the range of the two together) and one colour bar, labelled
    ``"log1p normalised counts"`` (``X`` and the predictions: ``normalize_total`` to 10,000 counts per
    spot, then ``log1p``), so that a prediction that is too flat or too strong shows at a glance. Spots
    without a value are drawn as empty outlines; every panel has a scale bar.

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
    {image_key}
    cmap
        Colour map.
    ncols
        Genes per row of the figure; by default one with ``measured=True``, else up to three.
    {max_image_px}
    crop
        Zoom onto the spots instead of showing the whole image.
    {spot_alpha}
    {scale_bar}
    {panel_size}
    {save_show}

    Returns
    -------
    The matplotlib figure; panels titled in words, ``"{gene} predicted ({method})"`` for
    ``key="predicted_{method}"`` and ``"{gene} measured"`` (``"{gene} measured ({layer})"`` from a
    layer). Writes nothing into ``sdata``.

    Raises
    ------
    ValueError
        When a gene was not predicted (the message lists some predicted ones), or, with ``measured=True``,
        is not measured.
    """
    import matplotlib.pyplot as plt

    names = as_gene_list(genes)
    scale_bar = check_scale_bar(scale_bar)
    check_save(save)
    table = get_table(sdata, table_key)
    key, _ = predictions(table, key, table_key, latest=True)
    check_predicted(names, table.obsm[key], key)
    ncols = check_count(ncols if ncols is not None else (1 if measured else min(3, len(names))), "ncols")
    measured_values = observed(table, names, key=key, layer=layer, table_key=table_key) if measured else None
    background = section_background(sdata, table, image_key, max_image_px, scale_bar=scale_bar)
    spots = background.spots
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
    measured_title = "measured" if layer is None else f"measured ({title_of(layer)})"
    unit = _expression_unit(layer if measured else None)
    for gene, row in zip(names, panels, strict=False):
        vmin, vmax = shared_range([frame[gene] for frame in frames])
        for ax, frame, what in zip(row, frames, (title_of(key), measured_title), strict=False):
            collection = spot_panel(
                ax,
                background,
                frame[gene],
                cmap=cmap,
                alpha=spot_alpha,
                crop=crop,
                vmin=vmin,
                vmax=vmax,
                colorbar=False,
            )
            ax.set_title(f"{gene} {what}")
        fig.colorbar(collection, ax=list(row), shrink=0.7, label=unit)
    for ax in panels[len(names) :].flat:
        ax.set_visible(False)
    return finish(fig, save=save, show=show)


def _expression_unit(layer: str | None) -> str:
    """The unit of predictions beside measured expression from ``layer``: one unit, or both when they differ."""
    measured = unit_of("", gene=True, layer=layer)
    return (
        EXPRESSION_UNIT
        if measured == EXPRESSION_UNIT
        else f"{EXPRESSION_UNIT} (predicted), {measured} (measured)"
    )


@doc_params
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

    Each point is a spot; the dashed line is ``predicted == measured``. The axes are labelled with what
    they show and its unit (``"measured"`` / ``"predicted ({method})"``, ``"log1p normalised counts"``).

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
    {panel_size}
    {save_show}

    Returns
    -------
    The matplotlib figure; panels titled ``"{gene}  r = {pearson:.2f}"``, the figure ``"predicted
    ({method})"``. Writes nothing into ``sdata``.

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
        low, high = shared_range([truth[:, i], predicted[:, i]])
        ax.plot([low, high], [low, high], linestyle="--", color="0.4", linewidth=1)
        ax.set_title(f"{gene}  r = {pearson[i]:.2f}")
        ax.set_xlabel(f"measured\n{unit_of(gene, gene=True, layer=layer)}")
        ax.set_ylabel(f"{title_of(key)}\n{EXPRESSION_UNIT}")
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(title_of(key))
    return finish(fig, save=save, show=show)


def shared_range(values: Sequence[pd.Series | np.ndarray]) -> tuple[float | None, float | None]:
    """The finite range of several value sets together (``None`` when none is finite)."""
    pooled = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in values])
    pooled = pooled[np.isfinite(pooled)]
    if pooled.size == 0:
        return None, None
    return float(pooled.min()), float(pooled.max())
