"""Square patches of a physical size around each spot: their geometry, built from a section
(``patch_layout``, a :class:`~hist2st_tk._image.PatchLayout`), and their shapes elements. Their pixels
are read by the patch datasets of ``hist2st_tk._image``.

A patch of ``patch_um`` microns is ``patch_um / mpp`` full-resolution pixels wide, centred on the spot.
It is read from the coarsest pyramid level that still has at least the encoder's input size across,
then resampled (bilinear, antialiased) to that size. With a working resolution (``working_mpp``), the
patch is first rendered at that many microns per pixel, as a coarser scanner would have imaged it:
the same tissue then gives the same pixels from any scan at least that fine (see ``docs/robustness.md``). Patches reaching past the image border are padded
with white, the colour of empty glass, and flagged in the ``padded`` column of their shapes element.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import TYPE_CHECKING

import pandas as pd

from .._constants import COORDINATE_SYSTEM, TABLE_KEY
from .._docs import doc_params
from .._image import PatchLayout
from .._logging import log_added, logger
from .._scale import get_mpp
from .._sdata import get_table, image_levels, resolve_image_key, section_image_key, spot_centres
from .._validate import check_microns

if TYPE_CHECKING:
    from spatialdata import SpatialData


def check_patch_um(patch_um: float) -> float:
    """``patch_um`` as a float, or raise when it is not a positive, finite number of microns."""
    return check_microns(patch_um, "patch_um")


def patch_sizes(patch_um: float | Sequence[float]) -> list[float]:
    """One or several patch sizes, checked, without duplicates, in the given order."""
    sizes = [patch_um] if isinstance(patch_um, Real) else list(patch_um)
    if not sizes:
        msg = "`patch_um` must be a size in microns or a non-empty sequence of sizes."
        raise ValueError(msg)
    checked = [check_patch_um(size) for size in sizes]
    return list(dict.fromkeys(checked))


def patches_key(spots: str, patch_um: float) -> str:
    """Name of the shapes element holding the patches of ``patch_um`` around the spots ``spots``."""
    return f"{spots}_patches_{patch_um:g}um"


def patch_layout(
    sdata: SpatialData,
    patch_um: float,
    *,
    input_px: int,
    table_key: str = TABLE_KEY,
    image_key: str | None = None,
    working_mpp: float | None = None,
) -> PatchLayout:
    """Patches of ``patch_um`` around every spot of the table, read at the level that suits ``input_px``
    (or the working resolution ``working_mpp``, when coarser)."""
    patch_um = check_patch_um(patch_um)
    if working_mpp is not None:
        working_mpp = check_microns(working_mpp, "working_mpp")
    table = get_table(sdata, table_key)
    spots, centres = spot_centres(sdata, table)
    image_key = resolve_image_key(sdata, image_key or section_image_key(sdata, table))
    mpp, source = get_mpp(sdata, image_key)
    levels = image_levels(sdata.images[image_key])
    full_height, full_width = levels[0].shape[-2:]
    side_px = patch_um / mpp
    detail_px = input_px
    if working_mpp is not None and working_mpp > mpp:
        detail_px = min(input_px, max(int(round(patch_um / working_mpp)), 1))
    elif working_mpp is not None and mpp > 1.05 * working_mpp:
        logger.info(
            "The image (%.3g um/px) is coarser than the working resolution (%.3g um/px): its %g um patches "
            "keep the image's own pixels.",
            mpp,
            working_mpp,
            patch_um,
        )
    level, downscale = 0, 1.0
    for index, array in enumerate(levels):
        factor = full_width / array.shape[-1]
        if side_px / factor >= detail_px:  # the coarsest level that does not need upsampling
            level, downscale = index, factor
    from spatialdata.models import get_table_keys

    _, _, instance_key = get_table_keys(table)
    return PatchLayout(
        image_key=image_key,
        spots_key=spots,
        spot_ids=pd.Index(table.obs[instance_key].to_numpy()),
        centres=centres,
        patch_um=patch_um,
        mpp=mpp,
        mpp_source=source,
        side_px=side_px,
        level=level,
        downscale=downscale,
        image_shape=(int(full_height), int(full_width)),
        working_mpp=working_mpp,
    )


def patch_shapes(layout: PatchLayout):
    """The patches as square polygons in the image's pixel space, indexed by spot id, with ``padded``."""
    import geopandas as gpd
    from shapely import box
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import Identity

    lo = layout.origins
    squares = box(lo[:, 0], lo[:, 1], lo[:, 0] + layout.side_px, lo[:, 1] + layout.side_px)
    frame = gpd.GeoDataFrame({"padded": layout.padded}, geometry=squares, index=pd.Index(layout.spot_ids))
    return ShapesModel.parse(frame, transformations={COORDINATE_SYSTEM: Identity()})


def add_patch_shapes(sdata: SpatialData, layout: PatchLayout) -> str:
    """Write the patches of ``layout`` as the shapes element ``{spots}_patches_{um}um``; returns its key."""
    key = patches_key(layout.spots_key, layout.patch_um)
    sdata.shapes[key] = patch_shapes(layout)
    log_added(f"shapes[{key!r}]", (len(layout.spot_ids),))
    n_padded = int(layout.padded.sum())
    if n_padded:
        logger.warning(
            "%d of %d patches of %g um reach past the image border; they are padded with white and flagged "
            "in shapes[%r]['padded'].",
            n_padded,
            len(layout.spot_ids),
            layout.patch_um,
            key,
        )
    return key


@doc_params
def patches(
    sdata: SpatialData,
    *,
    patch_um: float | Sequence[float] = 112.0,
    table_key: str = TABLE_KEY,
    image_key: str | None = None,
) -> list[str]:
    """Square patches of a physical size centred on every spot, recorded as shapes.

    :func:`image_features` calls this itself; call it directly to inspect or plot the patches.

    Parameters
    ----------
    sdata
        The section; its image needs a known microns per pixel (see :func:`hist2st_tk.io.get_mpp`).
    patch_um
        Edge of the square patches in microns, or several edges (one element per size).
    {table_key}
    image_key
        The image the patches are cut from; by default the section's image.

    Returns
    -------
    The keys of the shapes written: ``shapes["{spots}_patches_{um}um"]``, one per size, polygons in the
    image's pixel space indexed by spot id, with a bool column ``padded`` for patches that reach past
    the image border (they are padded with white when read).

    Examples
    --------
    >>> import hist2st_tk as ht
    >>> sdata = ht.datasets.synthetic(n_spots=16, n_genes=4)
    >>> ht.pp.patches(sdata, patch_um=[56, 112])
    ['synthetic_spots_patches_56um', 'synthetic_spots_patches_112um']
    """
    layouts = [
        patch_layout(sdata, size, input_px=1, table_key=table_key, image_key=image_key)
        for size in patch_sizes(patch_um)
    ]
    return [add_patch_shapes(sdata, layout) for layout in layouts]
