"""Square patches of a physical size around each spot: their geometry, and a dataset that reads them lazily.

A patch of ``patch_um`` microns is ``patch_um / mpp`` full-resolution pixels wide, centred on the spot.
It is read from the coarsest pyramid level that still has at least the encoder's input size across,
then resampled (bilinear, antialiased) to that size. With a working resolution (``working_mpp``), the
patch is first rendered at that many microns per pixel, as a coarser scanner would have imaged it:
the same tissue then gives the same pixels from any scan at least that fine (see ``docs/robustness.md``). Patches reaching past the image border are padded
with white, the colour of empty glass, and flagged in the ``padded`` column of their shapes element.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._constants import COORDINATE_SYSTEM, TABLE_KEY
from .._docs import doc_params
from .._image import PAD_VALUE, UnreadableImageError
from .._logging import log_added, logger
from .._scale import get_mpp
from .._sdata import get_table, image_levels, resolve_image_key, section_image_key, spot_centres
from .._validate import check_microns

if TYPE_CHECKING:
    import xarray as xr
    from spatialdata import SpatialData

#: Images up to this size are decoded once and cropped in memory; larger ones are read region by region.
IN_MEMORY_MAX_BYTES = 2 * 1024**3
#: Decoded chunks of a level read region by region are kept up to this size, least recently used dropped
#: first: a row of 1024 px chunks across a 100,000 px wide slide is about 300 MB.
BLOCK_CACHE_BYTES = 512 * 1024**2


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
    working_mpp: float | None = None

    @property
    def render_px(self) -> int | None:
        """Edge in pixels of the patch rendered at the working resolution; ``None`` when the image is
        no finer than it (the patch keeps the image's own pixels)."""
        if self.working_mpp is None or self.working_mpp <= self.mpp:
            return None
        return max(int(round(self.patch_um / self.working_mpp)), 1)

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
            "working_mpp": self.working_mpp,
            "render_px": self.render_px,
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


class ImageReader:
    """Crops of one pyramid level, decoded once when the level fits ``in_memory_max_bytes``.

    A larger level (a whole-slide image) is read chunk by chunk of its dask array: each chunk is decoded
    once and kept in a least-recently-used cache of ``cache_bytes``, so neighbouring patches share the
    decoding and the level is never loaded whole. A region that cannot be decoded raises
    :class:`UnreadableImageError`.
    """

    def __init__(
        self,
        level: xr.DataArray,
        *,
        in_memory_max_bytes: int = IN_MEMORY_MAX_BYTES,
        cache_bytes: int = BLOCK_CACHE_BYTES,
    ):
        self.level = level
        self.in_memory = level.nbytes <= in_memory_max_bytes
        self.cache_bytes = cache_bytes
        self._array: np.ndarray | None = None
        self._blocks: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray | None]] = OrderedDict()

    def load(self) -> ImageReader:
        """Decode the level now (before DataLoader workers fork, so that they share it).

        When the level cannot be decoded whole (a corrupted chunk), it is read chunk by chunk instead, so
        that only the patches touching the bad chunk fail.
        """
        if self.in_memory and self._array is None:
            data = self.level.data
            try:
                self._array = np.asarray(data.compute() if hasattr(data, "compute") else data)
            except Exception as err:  # any decoder error: reading chunk by chunk tells which part is bad
                logger.warning("Cannot decode the image whole (%s); reading it chunk by chunk.", err)
                self.in_memory = False
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
            region = self._region(ys, xs)
        out[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0] = region.transpose(1, 2, 0)
        return out

    def _region(self, ys: slice, xs: slice) -> np.ndarray:
        """``(3, h, w)`` pixels of a region, assembled from the cached chunks it overlaps."""
        data = self.level.data
        if not hasattr(data, "blocks"):
            return np.asarray(data[:, ys, xs])
        y_edges, x_edges = (np.cumsum((0, *chunks)) for chunks in data.chunks[1:])
        region = np.empty((data.shape[0], ys.stop - ys.start, xs.stop - xs.start), dtype=data.dtype)
        for i in _overlapping(y_edges, ys):
            for j in _overlapping(x_edges, xs):
                top, left = int(y_edges[i]), int(x_edges[j])
                block, bad = self._block(i, j, top=top, left=left)
                y_lo, y_hi = max(ys.start, top), min(ys.stop, top + block.shape[1])
                x_lo, x_hi = max(xs.start, left), min(xs.stop, left + block.shape[2])
                inside = (slice(y_lo - top, y_hi - top), slice(x_lo - left, x_hi - left))
                if bad is not None and bad[inside].any():
                    msg = (
                        f"Cannot decode the pixels around y={y_lo}, x={x_lo} of a level {tuple(self.level.shape)} "
                        "(a corrupted part of the image file)."
                    )
                    raise UnreadableImageError(msg)
                region[:, y_lo - ys.start : y_hi - ys.start, x_lo - xs.start : x_hi - xs.start] = block[
                    (slice(None), *inside)
                ]
        return region

    def _block(self, i: int, j: int, *, top: int, left: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Chunk ``(i, j)`` of the level and, when part of it cannot be decoded, the mask of that part."""
        if (i, j) in self._blocks:
            self._blocks.move_to_end((i, j))
            return self._blocks[(i, j)]
        chunk = self.level.data.blocks[:, i, j]
        try:
            # one chunk per call: the synchronous scheduler has no thread pool to start in DataLoader workers
            entry = np.asarray(chunk.compute(scheduler="synchronous")), None
        except Exception as err:  # decoders raise many types; all mean the same here
            partial = isinstance(err, UnreadableImageError) and err.pixels is not None
            if partial:  # the reader (e.g. read_wsi's) kept what it could decode
                entry = np.asarray(err.pixels), np.asarray(err.bad, dtype=bool)
            else:
                entry = (
                    np.full(chunk.shape, PAD_VALUE, dtype=chunk.dtype),
                    np.ones(chunk.shape[1:], dtype=bool),
                )
            logger.warning(
                "%d px of the image chunk at y=%d, x=%d cannot be decoded (%s); patches touching them are skipped.",
                int(entry[1].sum()),
                top,
                left,
                err,
            )
        self._blocks[(i, j)] = entry
        held = sum(block.nbytes for block, _ in self._blocks.values())
        while held > self.cache_bytes and len(self._blocks) > 1:
            held -= self._blocks.popitem(last=False)[1][0].nbytes
        return entry


def _overlapping(edges: np.ndarray, span: slice) -> range:
    """Indices of the chunks (between consecutive ``edges``) that overlap ``span``."""
    first = int(np.searchsorted(edges, span.start, "right")) - 1
    return range(first, int(np.searchsorted(edges, span.stop - 1, "right")))


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
        self.render_px = layout.render_px if layout.render_px and layout.render_px < self.size else None
        self.reader = reader
        self.out_px = out_px
        self.transform = transform

    def __len__(self) -> int:
        return len(self.origins)

    def patch(self, index: int) -> np.ndarray:
        """The ``(out_px, out_px, 3)`` uint8 patch of spot number ``index``."""
        return self.render(self.crop(index))

    def crop(self, index: int) -> np.ndarray:
        """The ``(size, size, 3)`` uint8 pixels of the level under the patch of spot number ``index``."""
        x0, y0 = self.origins[index]
        return self.reader.crop(int(x0), int(y0), self.size)

    def render(self, crop: np.ndarray) -> np.ndarray:
        """A ``(size, size, 3)`` crop resampled (and transformed) into the ``(out_px, out_px, 3)`` patch."""
        from PIL import Image

        if self.render_px is not None:  # the working resolution: detail finer than it is dropped first
            crop = np.asarray(Image.fromarray(crop).resize((self.render_px, self.render_px), Image.BILINEAR))
        if crop.shape[0] != self.out_px:
            crop = np.asarray(Image.fromarray(crop).resize((self.out_px, self.out_px), Image.BILINEAR))
        if self.transform is not None:
            crop = self.transform(crop)
        return crop

    def __getitem__(self, index: int):
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.patch(index).transpose(2, 0, 1)))


class MultiScalePatchDataset:
    """The patches of several sizes around each spot, read once per spot: a map-style torch dataset of
    tuples of ``(3, out_px, out_px)`` uint8 tensors, one per dataset of ``datasets``.

    Datasets that read the same pyramid level (the same :class:`ImageReader`) share one crop per spot,
    the largest: each smaller crop is cut out of it at the same level pixels, so that it holds exactly
    the pixels its dataset would have read (white past the image border included), and is then resampled
    as that dataset does. Every patch therefore equals ``datasets[k].patch(index)``, bit for bit. A spot
    whose crop does not lie inside the largest one, or whose largest crop cannot be decoded, is read by
    each dataset itself.

    Parameters
    ----------
    datasets
        :class:`PatchDataset` of the same spots, e.g. one per patch size.
    """

    def __init__(self, datasets: Sequence[PatchDataset]):
        self.datasets = list(datasets)
        if not self.datasets or len({len(dataset) for dataset in self.datasets}) != 1:
            msg = "MultiScalePatchDataset needs one or more datasets of the same spots."
            raise ValueError(msg)
        self.sources: list[int] = []  # per dataset: the dataset whose crop it is cut from
        self.inside: list[np.ndarray] = []  # per dataset and spot: whether its crop lies inside that crop
        for dataset in self.datasets:
            group = [j for j, other in enumerate(self.datasets) if other.reader is dataset.reader]
            source = max(group, key=lambda j: self.datasets[j].size)
            offsets = dataset.origins - self.datasets[source].origins
            self.sources.append(source)
            self.inside.append(
                ((offsets >= 0) & (offsets + dataset.size <= self.datasets[source].size)).all(axis=1)
            )

    def __len__(self) -> int:
        return len(self.datasets[0])

    def patches(self, index: int) -> list[np.ndarray]:
        """The ``(out_px, out_px, 3)`` uint8 patches of spot number ``index``, one per dataset."""
        shared: dict[int, np.ndarray | None] = {}
        out = []
        for dataset, source, inside in zip(self.datasets, self.sources, self.inside, strict=True):
            big = None
            if inside[index]:
                if source not in shared:
                    try:
                        shared[source] = self.datasets[source].crop(index)
                    except UnreadableImageError:  # a smaller crop may still be readable: each reads its own
                        shared[source] = None
                big = shared[source]
            if big is None:
                crop = dataset.crop(index)
            else:
                dx, dy = dataset.origins[index] - self.datasets[source].origins[index]
                crop = np.ascontiguousarray(big[dy : dy + dataset.size, dx : dx + dataset.size])
            out.append(dataset.render(crop))
        return out

    def __getitem__(self, index: int):
        import torch

        return tuple(
            torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1))) for patch in self.patches(index)
        )


def load_readers(readers: Sequence[ImageReader]) -> list[ImageReader]:
    """Decode the levels of several readers that fit in memory, sharing the work: levels of one lazily
    read image (a JPEG, whose pyramid is computed from its one decoding) are computed together, so that
    the file is decoded once, not once per level. Returns ``readers``, loaded."""
    pending = [reader for reader in readers if reader.in_memory and reader._array is None]
    arrays = [reader.level.data for reader in pending]
    if len(pending) > 1 and all(hasattr(data, "compute") for data in arrays):
        import dask

        try:
            computed = dask.compute(*arrays)
        except Exception:  # decoder errors: each reader then loads on its own, falling back as it can
            computed = None
        if computed is not None:
            for reader, array in zip(pending, computed, strict=True):
                reader._array = np.asarray(array)
    for reader in readers:
        reader.load()
    return list(readers)
