"""H&E with spots coloured by expression or annotation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from .._constants import TABLE_KEY
from .._docs import doc_params
from .._logging import logger
from .._sdata import image_levels, resolve_image_key, spots_key_of, values_per_spot
from .._section import check_section
from ._utils import (
    add_scale_bar,
    category_colours,
    check_save,
    check_scale_bar,
    colour_range,
    finish,
    is_label,
    title_of,
    unit_of,
    x_source,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData


@doc_params
def spatial(
    sdata: SpatialData,
    color: str | Sequence[str],
    *,
    layer: str | None = None,
    labels: str | Sequence[str] = (),
    units: Mapping[str, str] | None = None,
    table_key: str = TABLE_KEY,
    image_key: str | None = None,
    max_image_px: int = 2000,
    crop: bool = True,
    cmap: str = "viridis",
    spot_alpha: float = 0.8,
    scale_bar: bool | float = True,
    ncols: int = 2,
    panel_size: float = 5.0,
    title: str | None = None,
    save: str | Path | None = None,
    show: bool | None = None,
) -> Figure:
    """Plot the H&E image with its spots coloured by genes or ``obs`` columns, one panel per key.

    Spots are drawn as circles of their true size; spots without a value as empty outlines. Panels are
    titled in words (``"ERBB2 measured"``, ``"ERBB2 predicted (ridge)"`` for a predictions layer,
    ``"ERBB2 (counts)"`` for another layer; ``obs`` columns by their name with spaces, ``"novelty"`` for
    ``{key}_novelty``). Continuous values get a colour bar labelled with their unit or meaning: genes
    ``"log1p normalised counts"`` (``X`` and predictions: ``normalize_total`` to 10,000, then ``log1p``)
    or ``"counts"``, ``tumor_score`` ``"tumor probability"``, ``{key}_novelty`` ``"novelty (quantile of
    training sections)"``, other columns their name (see ``units``); probabilities and novelties are
    drawn on the fixed scale 0-1, comparable across sections. Categorical values get a legend,
    in one of two palettes, so that a cluster never shares its colour with an annotation:

    - **labels** (annotations: boolean columns such as ``tumor``, columns named ``*label`` or ``*labels``
      such as HER2ST's ``region_label``, and the columns in ``labels``): booleans True red and False
      light blue; labels naming tumor (``"cancer 1"``) in reds, ``"unknown"`` in grey, others in the
      muted tones of matplotlib's tab20b;
    - **clusters** (any other categorical column, e.g. ``leiden``): scanpy's bright tab10/tab20 colours,
      none of which is a label colour.

    Every panel has a scale bar in µm (``scale_bar``).

    Parameters
    ----------
    sdata
        The section.
    color
        Genes (``var_names``) and/or ``obs`` columns of the table.
    layer
        Read genes from ``layers[layer]`` instead of ``X`` (e.g. ``"counts"``, or predictions).
    labels
        Categorical ``obs`` columns among ``color`` to draw in the label palette besides those the rule
        above picks.
    units
        Colour-bar labels of continuous keys among ``color`` that replace the defaults, e.g.
        ``{"latent_colour": "haematoxylin fraction"}``.
    table_key
        The table annotating the spots.
    {image_key}
    {max_image_px}
    crop
        Zoom onto the spots (with a margin of three spot diameters) instead of the whole image.
    cmap
        Colour map of continuous values.
    {spot_alpha}
    {scale_bar}
    ncols
        Panels per row.
    {panel_size}
    title
        Figure title.
    {save_show}

    Returns
    -------
    The matplotlib figure. Writes nothing into ``sdata``.

    Raises
    ------
    ValueError
        When ``labels`` or ``units`` name a key that is not in ``color``, or ``scale_bar`` is not positive.
    KeyError
        When a key is neither a gene nor an ``obs`` column, or ``scale_bar`` is a length and the image's
        microns per pixel are unknown.
    """
    import matplotlib.pyplot as plt

    keys = [color] if isinstance(color, str) else list(color)
    if not keys:
        msg = "Pass at least one gene or obs column as `color`."
        raise ValueError(msg)
    labels = [labels] if isinstance(labels, str) else list(labels)
    units = dict(units or {})
    for name, given in (("labels", labels), ("units", units)):
        stray = [k for k in given if k not in keys]
        if stray:
            msg = f"`{name}` names {stray}, which are not among `color` {keys}."
            raise ValueError(msg)
    wrong = {k: v for k, v in units.items() if not isinstance(v, str)}
    if wrong:
        key, label = next(iter(wrong.items()))
        msg = f"`units` must map keys to labels (strings); {key!r} maps to {label!r}."
        raise TypeError(msg)
    scale_bar = check_scale_bar(scale_bar)
    check_save(save)
    table = check_section(sdata, table_key, spots=True)
    values = {key: values_per_spot(sdata, key, table_key=table_key, layer=layer) for key in keys}
    background = section_background(sdata, table, image_key, max_image_px, scale_bar=scale_bar)

    ncols = min(ncols, len(keys))
    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(panel_size * ncols * 1.4, panel_size * nrows),
        squeeze=False,
        layout="constrained",
    )
    source = layer if layer is not None else x_source(table)
    for ax, key in zip(axes.flat, keys, strict=False):
        gene = key not in table.obs.columns
        unit = unit_of(key, gene=gene, layer=layer, table=table)
        vmin, vmax = (None, None) if _is_categorical(values[key]) else colour_range(values[key], unit)
        spot_panel(
            ax,
            background,
            values[key],
            cmap=cmap,
            alpha=spot_alpha,
            crop=crop,
            vmin=vmin,
            vmax=vmax,
            label=units.get(key, unit),
            labels=is_label(key, values[key], labels),
        )
        ax.set_title(_gene_title(key, source) if gene else title_of(key))
    for ax in axes.flat[len(keys) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return finish(fig, save=save, show=show)


def _gene_title(gene: str, source: str) -> str:
    """``"ERBB2 measured"``, ``"ERBB2 predicted (ridge)"``, ``"ERBB2 (counts)"``: the gene and where from."""
    words = title_of(source)
    return f"{gene} {words}" if words == "measured" or words.startswith("predicted") else f"{gene} ({words})"


class _Background(NamedTuple):
    """What every panel of a section draws under its spots."""

    image: np.ndarray
    #: Full-resolution pixels per pixel of ``image`` (the drawn overview level).
    scale: float
    spots: pd.DataFrame
    #: Microns per full-resolution pixel, ``None`` for no scale bar.
    mpp: float | None
    #: Length of the scale bar in µm, ``None`` for a round length chosen per panel.
    bar_um: float | None


def section_background(
    sdata: SpatialData, table, image_key: str | None, max_image_px: int, *, scale_bar: bool | float = False
) -> _Background:
    """The overview image ``(y, x, c)``, its downscale, the spots the table annotates, and the scale.

    ``scale_bar`` as checked by :func:`check_scale_bar`: a length in µm needs the image's microns per
    pixel (a KeyError saying how to set them), ``True`` draws no bar (logged) without them.
    """
    from .._scale import get_mpp

    image_key = resolve_image_key(sdata, image_key)
    spots = sdata.shapes[spots_key_of(table)]
    image, scale = _overview_image(sdata.images[image_key], max_image_px)
    mpp = None
    if scale_bar is not False:
        try:
            mpp, _ = get_mpp(sdata, image_key)
        except KeyError:
            if scale_bar is not True:
                raise
            logger.info(
                "no scale bar: the microns per pixel of image %r are unknown; set them with "
                "`ht.io.set_mpp(sdata, %r, mpp=...)`.",
                image_key,
                image_key,
            )
    return _Background(image, scale, spots, mpp, None if scale_bar is True else scale_bar)


def spot_panel(
    ax: Axes,
    background: _Background,
    values: pd.Series,
    *,
    cmap: str,
    alpha: float,
    crop: bool,
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
    label: str | None = None,
    labels: bool = False,
    legend_title: str | None = None,
):
    """One panel: the H&E in full-resolution pixel coordinates with the spots coloured by ``values``.

    The overview level is stretched to the full-resolution extent, so that the spots (in full-resolution
    pixels) fall in place and the scale bar is ``um / mpp`` data units long whatever level is drawn.
    """
    image, scale, spots = background.image, background.scale, background.spots
    ax.imshow(image, extent=(0, image.shape[1] * scale, image.shape[0] * scale, 0))
    collection = _draw_spots(
        ax,
        spots,
        values,
        cmap=cmap,
        alpha=alpha,
        vmin=vmin,
        vmax=vmax,
        colorbar=colorbar,
        label=label,
        labels=labels,
        legend_title=legend_title,
    )
    ax.set_axis_off()
    if crop:
        _crop_to_spots(ax, spots)
    if background.mpp is not None:
        add_scale_bar(ax, background.mpp, background.bar_um)
    return collection


def _overview_image(image, max_image_px: int) -> tuple[np.ndarray, float]:
    """The coarsest level with a long side of at least ``max_image_px`` as (y, x, c), and its downscale."""
    levels = image_levels(image)
    full_width = levels[0].sizes["x"]
    chosen = levels[0]
    for level in levels:
        if max(level.sizes["y"], level.sizes["x"]) >= max_image_px:
            chosen = level
    rgb = np.asarray(chosen.transpose("y", "x", "c").values)
    return rgb, full_width / chosen.sizes["x"]


def _is_categorical(values: pd.Series) -> bool:
    """Drawn with a legend rather than a colour bar: categorical, boolean, string or object values."""
    return pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values)


def _draw_spots(
    ax: Axes,
    spots,
    values: pd.Series,
    *,
    cmap: str,
    alpha: float,
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
    label: str | None = None,
    labels: bool = False,
    legend_title: str | None = None,
):
    """Spots as circles of their true size; returns the coloured collection of continuous values, else None.

    Categories take :func:`~._utils.label_palette` with ``labels``, else
    :func:`~._utils.cluster_palette`; ``label`` is the colour bar's label.
    """
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Circle

    circles = [Circle((p.x, p.y), r) for p, r in zip(spots.geometry, spots["radius"], strict=True)]
    missing = values.isna().to_numpy()
    collection = None
    if _is_categorical(values):
        colours = category_colours(values, labels=labels)
        present = ~missing
        ax.add_collection(
            PatchCollection(
                [c for c, m in zip(circles, present, strict=True) if m],
                facecolors=[colours[v] for v in values[present]],
                edgecolors="none",
                alpha=alpha,
            )
        )
        handles = [ax.scatter([], [], color=colour, label=str(name)) for name, colour in colours.items()]
        if missing.any():
            handles.append(ax.scatter([], [], facecolors="none", edgecolors="0.3", label="no value"))
        ax.legend(
            handles=handles,
            title=legend_title,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            frameon=False,
            fontsize=8,
            title_fontsize=8,
        )
    else:
        collection = PatchCollection(
            [c for c, m in zip(circles, missing, strict=True) if not m],
            cmap=cmap,
            alpha=alpha,
            edgecolors="none",
        )
        collection.set_array(values.to_numpy(dtype=float)[~missing])
        collection.set_clim(vmin, vmax)
        ax.add_collection(collection)
        if colorbar:
            ax.figure.colorbar(collection, ax=ax, shrink=0.7, label=label)
    if missing.any():
        empty = [c for c, m in zip(circles, missing, strict=True) if m]
        ax.add_collection(PatchCollection(empty, facecolors="none", edgecolors="0.3", linewidths=0.5))
    return collection


def _crop_to_spots(ax: Axes, spots) -> None:
    xy = np.column_stack([spots.geometry.x, spots.geometry.y])
    margin = 6 * float(spots["radius"].max())
    (x0, y0), (x1, y1) = xy.min(axis=0) - margin, xy.max(axis=0) + margin
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)
