"""Square patches of a physical size around each spot: their geometry, and a dataset that reads them lazily.

A patch of ``patch_um`` microns is ``patch_um / mpp`` full-resolution pixels wide, centred on the spot.
It is read from the coarsest pyramid level that still has at least the encoder's input size across,
then resampled (bilinear, antialiased) to that size. Patches reaching past the image border are padded
with white, the colour of empty glass, and flagged in the ``padded`` column of their shapes element.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._constants import COORDINATE_SYSTEM, TABLE_KEY
from .._logging import log_added, logger
from .._scale import get_mpp
from .._sdata import get_table, image_levels, resolve_image_key, section_image_key, spot_centres
from .._validate import check_microns

if TYPE_CHECKING:
    import xarray as xr
    from spatialdata import SpatialData

#: Images up to this size are decoded once and cropped in memory; larger ones are read region by region.
IN_MEMORY_MAX_BYTES = 2 * 1024**3
#: Value of padding outside the image (white glass background).
PAD_VALUE = 255


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


@dataclass(frozen=True)
class PatchLayout:
    """Where the patches of one section lie and how they are read.

    Coordinates are full-resolution pixels; ``level`` is the pyramid level read, whose pixels are
    ``downscale`` full-resolution pixels wide.
    """

    image_key: str
    spots_key: str
    spot_ids: pd.Index
    centres: np.ndarray
    patch_um: float
    mpp: float
    mpp_source: str
    side_px: float
    level: int
    downscale: float
    image_shape: tuple[int, int]

    @property
    def origins(self) -> np.ndarray:
        """Top-left corners of the patches, full-resolution pixels."""
        return self.centres - self.side_px / 2

    @property
    def padded(self) -> np.ndarray:
        """Whether each patch reaches past the image border."""
        height, width = self.image_shape
        lo, hi = self.origins, self.origins + self.side_px
        return (lo[:, 0] < 0) | (lo[:, 1] < 0) | (hi[:, 0] > width) | (hi[:, 1] > height)

    def params(self) -> dict:
        """Geometry for ``uns[...]["params"]`` (plain types)."""
        return {
            "patch_um": self.patch_um,
            "mpp": self.mpp,
            "mpp_source": self.mpp_source,
            "patch_px": self.side_px,
            "level": self.level,
            "level_downscale": self.downscale,
            "image_key": self.image_key,
            "n_padded": int(self.padded.sum()),
        }


def patch_layout(
    sdata: SpatialData,
    patch_um: float,
    *,
    input_px: int,
    table_key: str = TABLE_KEY,
    image_key: str | None = None,
) -> PatchLayout:
    """Patches of ``patch_um`` around every spot of the table, read at the level that suits ``input_px``."""
    patch_um = check_patch_um(patch_um)
    table = get_table(sdata, table_key)
    spots, centres = spot_centres(sdata, table)
    image_key = resolve_image_key(sdata, image_key or section_image_key(sdata, table))
    mpp, source = get_mpp(sdata, image_key)
    levels = image_levels(sdata.images[image_key])
    full_height, full_width = levels[0].shape[-2:]
    side_px = patch_um / mpp
    level, downscale = 0, 1.0
    for index, array in enumerate(levels):
        factor = full_width / array.shape[-1]
        if side_px / factor >= input_px:  # the coarsest level that does not need upsampling
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
    table_key
        Name of the table of spots.
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


class ImageReader:
    """Crops of one pyramid level, decoded once when the level fits ``in_memory_max_bytes``."""

    def __init__(self, level: xr.DataArray, *, in_memory_max_bytes: int = IN_MEMORY_MAX_BYTES):
        self.level = level
        self.in_memory = level.nbytes <= in_memory_max_bytes
        self._array: np.ndarray | None = None

    def load(self) -> ImageReader:
        """Decode the level now (before DataLoader workers fork, so that they share it)."""
        if self.in_memory and self._array is None:
            self._array = np.asarray(
                self.level.data.compute() if hasattr(self.level.data, "compute") else self.level
            )
        return self

    def crop(self, x0: int, y0: int, size: int) -> np.ndarray:
        """``(size, size, 3)`` uint8 RGB at ``(x0, y0)`` of this level, white outside the image."""
        _, height, width = self.level.shape
        out = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
        ys, xs = slice(max(y0, 0), min(y0 + size, height)), slice(max(x0, 0), min(x0 + size, width))
        if ys.start >= ys.stop or xs.start >= xs.stop:
            return out
        if self.in_memory:
            region = self.load()._array[:, ys, xs]
        else:
            region = np.asarray(self.level.data[:, ys, xs])
        out[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0] = region.transpose(1, 2, 0)
        return out


class PatchDataset:
    """A map-style torch dataset of the patches of one section as ``(3, out_px, out_px)`` uint8 tensors.

    Parameters
    ----------
    layout
        Where the patches lie (:func:`patch_layout`).
    reader
        Crops of the pyramid level ``layout.level``.
    out_px
        Edge of the returned patches (the encoder's input size).
    transform
        Applied to each resampled ``(out_px, out_px, 3)`` uint8 patch, e.g. the stain normaliser of
        :func:`hist2st_tk.pp.normalize_stain`; must return the same shape and dtype.
    """

    def __init__(
        self,
        layout: PatchLayout,
        reader: ImageReader,
        *,
        out_px: int,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        side = layout.side_px / layout.downscale
        self.size = max(int(round(side)), 1)
        centres = layout.centres / layout.downscale
        self.origins = np.rint(centres - self.size / 2).astype(np.int64)
        self.reader = reader
        self.out_px = out_px
        self.transform = transform

    def __len__(self) -> int:
        return len(self.origins)

    def patch(self, index: int) -> np.ndarray:
        """The ``(out_px, out_px, 3)`` uint8 patch of spot number ``index``."""
        from PIL import Image

        x0, y0 = self.origins[index]
        crop = self.reader.crop(int(x0), int(y0), self.size)
        if self.size != self.out_px:
            crop = np.asarray(Image.fromarray(crop).resize((self.out_px, self.out_px), Image.BILINEAR))
        if self.transform is not None:
            crop = self.transform(crop)
        return crop

    def __getitem__(self, index: int):
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.patch(index).transpose(2, 0, 1)))
