"""What every reader of H&E pixels shares, at the bottom of the package: the value of padding outside an
image, the error of a region whose pixels cannot be decoded (io raises it, pp and tl handle it), the lazy
crop readers of a pyramid level, and the patch datasets read through them (pp, models and tl).

:class:`PatchLayout` is where the patches of a section lie (``patch_layout`` of ``pp`` builds it from a
SpatialData); :class:`PatchDataset` reads them through an :class:`ImageReader` of the chosen pyramid
level, renders them at the working resolution when there is one, resamples them to the encoder's input
size and pads them with white (``PAD_VALUE``) past the image border.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ._logging import logger

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

#: Value of padding outside the image (white glass background).
PAD_VALUE = 255


class UnreadableImageError(OSError):
    """Pixels of an image region cannot be decoded (for example a corrupted tile of a slide file).

    A reader that could decode part of the region passes it as ``pixels`` (``(c, h, w)``, white where it
    failed) with ``bad``, the ``(h, w)`` mask of the pixels it could not decode.
    """

    def __init__(self, message: str, *, pixels: np.ndarray | None = None, bad: np.ndarray | None = None):
        super().__init__(message)
        self.pixels = pixels
        self.bad = bad


#: Images up to this size are decoded once and cropped in memory; larger ones are read region by region.
IN_MEMORY_MAX_BYTES = 2 * 1024**3
#: Decoded chunks of a level read region by region are kept up to this size, least recently used dropped
#: first: a row of 1024 px chunks across a 100,000 px wide slide is about 300 MB.
BLOCK_CACHE_BYTES = 512 * 1024**2


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
        Where the patches lie (built by ``patch_layout`` of ``pp``).
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
