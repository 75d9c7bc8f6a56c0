"""H&E with spots coloured by expression or annotation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._constants import TABLE_KEY
from .._sdata import get_table, image_levels, resolve_image_key, spots_key_of, values_per_spot
from ._utils import check_save, finish, shared_docs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData


@shared_docs
def spatial(
    sdata: SpatialData,
    color: str | Sequence[str],
    *,
    layer: str | None = None,
    table_key: str = TABLE_KEY,
    image_key: str | None = None,
    max_image_px: int = 2000,
    crop: bool = True,
    cmap: str = "viridis",
    spot_alpha: float = 0.8,
    ncols: int = 2,
    panel_size: float = 5.0,
    title: str | None = None,
    save: str | Path | None = None,
    show: bool | None = None,
) -> Figure:
    """Plot the H&E image with its spots coloured by genes or ``obs`` columns, one panel per key.

    Spots are drawn as circles of their true size. Continuous values get a colour bar, categorical
    ones a legend; spots without a value are drawn as empty outlines.

    Parameters
    ----------
    sdata
        The section.
    color
        Genes (``var_names``) and/or ``obs`` columns of the table.
    layer
        Read genes from ``layers[layer]`` instead of ``X`` (e.g. ``"counts"``, or predictions).
    table_key
        The table annotating the spots.
    image_key
        The H&E image; may be omitted when there is one image.
    max_image_px
        The coarsest pyramid level whose longest side is at least this many pixels is drawn.
    crop
        Zoom onto the spots (with a margin of three spot diameters) instead of the whole image.
    cmap
        Colour map of continuous values.
    spot_alpha
        Opacity of the spots.
    ncols
        Panels per row.
    panel_size
        Size of one panel in inches.
    title
        Figure title.
    {save_show}

    Returns
    -------
    The matplotlib figure. Writes nothing into ``sdata``.
    """
    import matplotlib.pyplot as plt

    keys = [color] if isinstance(color, str) else list(color)
    if not keys:
        msg = "Pass at least one gene or obs column as `color`."
        raise ValueError(msg)
    check_save(save)
    table = get_table(sdata, table_key)
    values = {key: values_per_spot(sdata, key, table_key=table_key, layer=layer) for key in keys}
    image, scale, spots = _section_background(sdata, table, image_key, max_image_px)

    ncols = min(ncols, len(keys))
    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(panel_size * ncols * 1.4, panel_size * nrows),
        squeeze=False,
        layout="constrained",
    )
    for ax, key in zip(axes.flat, keys, strict=False):
        _spot_panel(ax, image, scale, spots, values[key], cmap=cmap, alpha=spot_alpha, crop=crop)
        ax.set_title(key if layer is None or key in table.obs.columns else f"{key} ({layer})")
    for ax in axes.flat[len(keys) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return finish(fig, save=save, show=show)


def _section_background(sdata: SpatialData, table, image_key: str | None, max_image_px: int):
    """The overview image ``(y, x, c)``, its downscale to full resolution, and the spots the table annotates."""
    spots = sdata.shapes[spots_key_of(table)]
    image, scale = _overview_image(sdata.images[resolve_image_key(sdata, image_key)], max_image_px)
    return image, scale, spots


def _spot_panel(
    ax: Axes,
    image: np.ndarray,
    scale: float,
    spots,
    values: pd.Series,
    *,
    cmap: str,
    alpha: float,
    crop: bool,
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
):
    """One panel: the H&E in full-resolution pixel coordinates with the spots coloured by ``values``."""
    ax.imshow(image, extent=(0, image.shape[1] * scale, image.shape[0] * scale, 0))
    collection = _draw_spots(
        ax, spots, values, cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax, colorbar=colorbar
    )
    ax.set_axis_off()
    if crop:
        _crop_to_spots(ax, spots)
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
):
    """Spots as circles of their true size; returns the coloured collection of continuous values, else None."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Circle

    circles = [Circle((p.x, p.y), r) for p, r in zip(spots.geometry, spots["radius"], strict=True)]
    missing = values.isna().to_numpy()
    collection = None
    if isinstance(values.dtype, pd.CategoricalDtype) or values.dtype == object or values.dtype == "boolean":
        categories = pd.Categorical(values.astype("object").where(~values.isna(), None))
        palette = _palette(len(categories.categories))
        shown = [
            (circle, palette[code])
            for circle, code in zip(circles, categories.codes, strict=True)
            if code >= 0
        ]
        ax.add_collection(
            PatchCollection(
                [c for c, _ in shown], facecolors=[f for _, f in shown], edgecolors="none", alpha=alpha
            )
        )
        handles = [
            ax.scatter([], [], color=palette[i], label=str(name))
            for i, name in enumerate(categories.categories)
        ]
        if missing.any():
            handles.append(ax.scatter([], [], facecolors="none", edgecolors="0.3", label="no value"))
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
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
            ax.figure.colorbar(collection, ax=ax, shrink=0.7)
    if missing.any():
        empty = [c for c, m in zip(circles, missing, strict=True) if m]
        ax.add_collection(PatchCollection(empty, facecolors="none", edgecolors="0.3", linewidths=0.5))
    return collection


def _palette(n: int) -> list:
    import matplotlib as mpl

    base = mpl.colormaps["tab10" if n <= 10 else "tab20"]
    return [base(i % base.N) for i in range(n)]


def _crop_to_spots(ax: Axes, spots) -> None:
    xy = np.column_stack([spots.geometry.x, spots.geometry.y])
    margin = 6 * float(spots["radius"].max())
    (x0, y0), (x1, y1) = xy.min(axis=0) - margin, xy.max(axis=0) + margin
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)
