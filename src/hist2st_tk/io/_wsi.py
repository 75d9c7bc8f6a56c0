"""Reader for H&E-only whole-slide images: pyramidal TIFF, SVS and the other formats tiffslide reads."""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from .._constants import ATTRS_KEY, COORDINATE_SYSTEM, image_key
from .._image import PAD_VALUE, UnreadableImageError
from .._logging import logger
from .._scale import check_mpp, set_mpp
from ._elements import IMAGE_CHUNK, check_file, check_sample_name

if TYPE_CHECKING:
    import dask.array as da
    from spatialdata import SpatialData
    from xarray import DataTree

#: Piece read at a time when a striped (untiled) file has a region that cannot be decoded.
DEFAULT_TILE = 256
#: x and y microns per pixel that differ by more than this fraction are refused (within it, their mean is used).
_MPP_ANISOTROPY = 0.01


def read_wsi(path: str | Path, *, mpp: float | None = None, sample: str | None = None) -> SpatialData:
    """Read an H&E whole-slide image lazily as a multiscale SpatialData image.

    The slide is opened with `tiffslide <https://github.com/Bayer-Group/tiffslide>`_, a pure-Python
    reader (tifffile + imagecodecs, no system library): Aperio SVS, generic pyramidal TIFF (as written by
    tifffile, vips or bfconvert, OME-TIFF included), Leica SCN, Philips TIFF, Ventana BIF and, partly,
    Hamamatsu NDPI. Formats that are not TIFF-based (MIRAX ``.mrxs``, Olympus ``.vsi``, DICOM, iSyntax)
    are not read: convert them to a pyramidal TIFF first (e.g. ``vips tiffsave in.mrxs out.tiff --tile
    --pyramid --compression jpeg``). There is no optional backend.

    Every level of the slide's own pyramid becomes a level of the image, read through tiffslide's zarr
    view in chunks of 1024 x 1024 px: nothing is decoded until used, and the full-resolution level is
    never read whole.

    Parameters
    ----------
    path
        The slide file.
    mpp
        Microns per pixel of the full-resolution level; overrides the slide's metadata. Required when the
        metadata has none (e.g. a TIFF without resolution tags) or records non-square pixels.
    sample
        Slide name; element names derive from it. Default: the file name without its extension
        (and without ``.ome``).

    Returns
    -------
    A SpatialData with

    - ``images["{sample}_he"]``: RGB uint8 ``(c, y, x)``, multiscale (one level per pyramid level of the
      slide), lazily read, in the coordinate system ``"global"`` (full-resolution pixels);
    - ``attrs["hist2st_tk"]["mpp"]["{sample}_he"]``: microns per pixel, source ``"slide_metadata"``
      (the mean of the slide's x and y values) or ``"user"``;
    - ``attrs["hist2st_tk"]["slide"]["{sample}_he"]``: ``path`` (absolute), ``vendor`` (tiffslide's
      format name) and ``level_shapes`` (``[height, width]`` per level).

    It has no spots and no table: :func:`hist2st_tk.pp.tile_tissue` adds a grid of tiles over the tissue.
    Raises when the file is not a slide, is not RGB, or, when ``mpp`` is not given, its metadata has no
    microns per pixel or has x and y values that differ by more than 1 % (non-square pixels).
    """
    path = check_file(path, "slide").resolve()
    sample = check_sample_name(sample if sample is not None else slide_name(path))
    if mpp is not None:
        mpp = check_mpp(mpp)
    slide = _open(path)
    try:
        owner = _OpenSlide(slide)
        levels = [
            _level_array(
                slide.zarr_group[str(i)], path, level=i, tile=_tile_shape(slide.properties, i), owner=owner
            )
            for i in range(slide.level_count)
        ]
        if mpp is None:
            mpp, source = _metadata_mpp(slide.properties, path), "slide_metadata"
        else:
            source = "user"
    except BaseException:
        slide.close()
        raise

    from spatialdata import SpatialData

    key = image_key(sample)
    sdata = SpatialData(images={key: _multiscale(levels)})
    set_mpp(sdata, key, mpp, source=source)
    sdata.attrs[ATTRS_KEY].setdefault("slide", {})[key] = {
        "path": str(path),
        "vendor": str(slide.properties.get("tiffslide.vendor") or slide.detect_format(path)),
        "level_shapes": [[int(a.shape[1]), int(a.shape[2])] for a in levels],
    }
    height, width = levels[0].shape[1:]
    logger.info(
        "read slide %r: %d x %d px, %d levels, %.4f um/px (%s)",
        sample,
        width,
        height,
        len(levels),
        mpp,
        source,
    )
    return sdata


def slide_name(path: Path) -> str:
    """``slide`` for ``slide.svs`` and ``slide.ome.tiff``."""
    return Path(path.stem).stem if path.stem.lower().endswith(".ome") else path.stem


def _open(path: Path):
    """The slide opened with tiffslide, or an error saying the file is not a slide it can read."""
    from tifffile import TiffFileError
    from tiffslide import TiffSlide

    slide = None
    try:
        slide = TiffSlide(path)
        slide.level_count  # noqa: B018 - parses the pyramid now, so that a broken one fails here
    except (TiffFileError, NotImplementedError, KeyError, IndexError, OSError, ValueError) as err:
        if slide is not None:
            slide.close()
        msg = (
            f"Cannot read {str(path)!r} as a whole-slide image ({type(err).__name__}: {err}). read_wsi reads "
            "TIFF-based slides (SVS, pyramidal TIFF, OME-TIFF, SCN, NDPI, Philips TIFF); convert other formats "
            "to a pyramidal TIFF first."
        )
        raise ValueError(msg) from None
    return slide


class _OpenSlide:
    """Keeps a slide file open while any of its levels is in use, and closes it when none is left."""

    def __init__(self, slide):
        import weakref

        weakref.finalize(self, slide.close)


def _level_array(array, path: Path, *, level: int, tile: tuple[int, int], owner: _OpenSlide) -> da.Array:
    """One pyramid level as a lazy ``(3, y, x)`` uint8 dask array in chunks of :data:`IMAGE_CHUNK`."""
    import dask.array as da
    import numpy as np

    if array.ndim != 3 or array.shape[2] not in (3, 4) or array.dtype != np.uint8:
        msg = (
            f"The slide {str(path)!r} is not 8-bit RGB: its pixels have shape {tuple(array.shape)} and dtype "
            f"{array.dtype}. read_wsi reads brightfield H&E slides."
        )
        raise ValueError(msg)
    source = SlideLevel(array, tile=tile, owner=owner)
    return da.from_array(
        source,
        chunks=(3, IMAGE_CHUNK, IMAGE_CHUNK),
        name=f"slide-{path.name}-{level}-{uuid.uuid4().hex[:8]}",  # no need to hash the file to name it
        meta=np.empty((0, 0, 0), dtype=np.uint8),
        fancy=False,
    )


class SlideLevel:
    """One level of a slide as a ``(3, y, x)`` array-like over tiffslide's zarr ``(y, x, s)`` array.

    A region that cannot be decoded whole is read again tile by tile of the slide file; it then raises
    :class:`~hist2st_tk._image.UnreadableImageError` carrying the tiles that could be decoded and the
    mask of those that could not, so that a corrupted tile costs only the patches that touch it.
    Alpha, when there is one, is dropped.
    """

    def __init__(self, array, *, tile: tuple[int, int], owner: object = None):
        self.array = array
        self.owner = owner
        self.tile = tile
        self.shape = (3, *array.shape[:2])
        self.dtype = array.dtype
        self.ndim = 3

    def __getitem__(self, key: tuple[slice, slice, slice]):
        channels, ys, xs = (slice(*k.indices(n)) for k, n in zip(key, self.shape, strict=True))
        try:
            return self.array[ys, xs, :3].transpose(2, 0, 1)[channels]
        except Exception as err:  # decoders raise many types; the tile-by-tile pass tells which tiles are bad
            pixels, bad = self._salvage(ys, xs)

            msg = f"{int(bad.sum())} px around y={ys.start}, x={xs.start} cannot be decoded: {err}"
            raise UnreadableImageError(msg, pixels=pixels[channels], bad=bad) from err

    def _salvage(self, ys: slice, xs: slice):
        """The region read tile by tile: white where a tile fails, and the mask of those pixels."""
        import numpy as np


        pixels = np.full((3, ys.stop - ys.start, xs.stop - xs.start), PAD_VALUE, dtype=self.dtype)
        bad = np.zeros(pixels.shape[1:], dtype=bool)
        tile_h, tile_w = self.tile
        for top in range(ys.start - ys.start % tile_h, ys.stop, tile_h):
            for left in range(xs.start - xs.start % tile_w, xs.stop, tile_w):
                y0, y1 = max(top, ys.start), min(top + tile_h, ys.stop)
                x0, x1 = max(left, xs.start), min(left + tile_w, xs.stop)
                inside = (slice(y0 - ys.start, y1 - ys.start), slice(x0 - xs.start, x1 - xs.start))
                try:
                    pixels[(slice(None), *inside)] = self.array[y0:y1, x0:x1, :3].transpose(2, 0, 1)
                except Exception:  # noqa: PERF203 - this tile is corrupted; the others are kept
                    bad[inside] = True
        return pixels, bad


def _tile_shape(properties: dict, level: int) -> tuple[int, int]:
    """Edge of the slide file's tiles at ``level`` (256 for untiled, striped files)."""
    height = properties.get(f"tiffslide.level[{level}].tile-height") or DEFAULT_TILE
    width = properties.get(f"tiffslide.level[{level}].tile-width") or DEFAULT_TILE
    return int(height), int(width)


def _metadata_mpp(properties: dict, path: Path) -> float:
    x, y = properties.get("tiffslide.mpp-x"), properties.get("tiffslide.mpp-y")
    values = [float(v) for v in (x, y) if v is not None and math.isfinite(float(v)) and float(v) > 0]
    if not values:
        msg = (
            f"The slide {str(path)!r} does not record its microns per pixel (no Aperio MPP, no resolution "
            "tags). Pass `mpp=` (e.g. 0.25 for a 40x scan, 0.5 for 20x)."
        )
        raise ValueError(msg)
    if len(values) == 2 and abs(values[0] - values[1]) > _MPP_ANISOTROPY * max(values):
        # one scale is assumed everywhere downstream (patch sizes in um, tissue areas): a mean would
        # silently distort every patch; usually the metadata is wrong, which only the user can tell
        msg = (
            f"The slide {str(path)!r} records non-square pixels: {values[0]:g} um per pixel in x and "
            f"{values[1]:g} um in y. read_wsi needs one scale for both axes; if you know the right one, "
            "pass it explicitly as `mpp=`."
        )
        raise ValueError(msg)
    return sum(values) / len(values)


def _multiscale(levels: list[da.Array]) -> DataTree:
    """The slide's own pyramid as a spatialdata multiscale image (``scale0``, ``scale1``, ...)."""
    import xarray as xr
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Identity, set_transformation

    tree = xr.DataTree.from_dict(
        {
            f"scale{i}": xr.Dataset(
                {"image": xr.DataArray(level, dims=("c", "y", "x"), coords={"c": ["r", "g", "b"]})}
            )
            for i, level in enumerate(levels)
        }
    )
    # spatialdata derives each level's scale to the full resolution from the level shapes
    set_transformation(tree, {COORDINATE_SYSTEM: Identity()}, set_all=True)
    Image2DModel().validate(tree)
    return tree
