"""Build the three elements of a section (docs/data_model.md) the same way for every reader."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from .._constants import (
    COORDINATE_SYSTEM,
    INSTANCE_KEY,
    PATIENT_KEY,
    REGION_KEY,
    SAMPLE_KEY,
    TABLE_KEY,
    MppSource,
    image_key,
    spots_key,
)
from .._scale import set_mpp

if TYPE_CHECKING:
    import dask.array as da
    from spatialdata import SpatialData
    from xarray import DataTree

#: Chunk edge of image levels, in pixels.
IMAGE_CHUNK = 1024
#: Pyramid levels are added until the smallest one is below this edge.
SMALLEST_LEVEL = 1024


def check_file(path: str | Path, what: str) -> Path:
    """Return ``path`` as a Path, or raise ``FileNotFoundError`` naming ``what`` is missing."""
    path = Path(path)
    if not path.is_file():
        msg = f"The {what} file does not exist: {str(path)!r}."
        raise FileNotFoundError(msg)
    return path


def check_sample_name(sample: str) -> str:
    """``sample`` when it can name SpatialData elements (spatialdata's naming rules)."""
    valid = (
        isinstance(sample, str)
        and sample not in ("", ".", "..")
        and not sample.startswith("__")
        and all(c.isalnum() or c in "_-." for c in sample)
    )
    if not valid:
        msg = (
            f"The sample name {sample!r} cannot name SpatialData elements: use letters, digits, '_', '-' and "
            "'.' only (pass another `sample=`)."
        )
        raise ValueError(msg)
    return sample


@contextlib.contextmanager
def large_images_allowed():
    """Let Pillow open H&E scans larger than its decompression-bomb limit (about 90 Mpx)."""
    from PIL import Image

    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an RGB image file, read from its header only.

    Raises when the file is not an image or is not RGB(A).
    """
    from PIL import Image, UnidentifiedImageError

    path = check_file(path, "H&E image")
    with large_images_allowed():
        try:
            with Image.open(path) as img:
                mode, (width, height) = img.mode, img.size
        except (UnidentifiedImageError, OSError) as err:
            msg = f"Cannot read {str(path)!r} as an image: {err}"
            raise ValueError(msg) from None
    if mode not in ("RGB", "RGBA"):
        msg = f"The H&E image {str(path)!r} is not RGB (Pillow mode {mode!r}); convert it to 8-bit RGB."
        raise ValueError(msg)
    return height, width


def _decode_rgb(path: str) -> np.ndarray:
    from PIL import Image

    with large_images_allowed(), Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"))
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def lazy_rgb_file(path: str | Path) -> da.Array:
    """A ``(c, y, x)`` uint8 dask array that decodes the image only when computed."""
    import dask
    import dask.array as da

    height, width = image_size(path)
    decoded = da.from_delayed(dask.delayed(_decode_rgb)(str(path)), shape=(3, height, width), dtype=np.uint8)
    return decoded.rechunk((3, IMAGE_CHUNK, IMAGE_CHUNK))


def _scale_factors(height: int, width: int) -> list[int]:
    factors, edge = [], min(height, width)
    while edge >= 2 * SMALLEST_LEVEL:
        factors.append(2)
        edge //= 2
    return factors


def he_image(data: da.Array | np.ndarray) -> DataTree | object:
    """Parse a ``(c, y, x)`` uint8 RGB array as a (multiscale, when large) image in pixel space."""
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Identity

    if data.ndim != 3 or data.shape[0] != 3:
        msg = f"An H&E image must be RGB with dims (c, y, x) and 3 channels, got shape {tuple(data.shape)}."
        raise ValueError(msg)
    _, height, width = data.shape
    return Image2DModel.parse(
        data,
        dims=("c", "y", "x"),
        c_coords=["r", "g", "b"],
        scale_factors=_scale_factors(height, width) or None,
        chunks=(3, IMAGE_CHUNK, IMAGE_CHUNK),
        transformations={COORDINATE_SYSTEM: Identity()},
    )


def spot_circles(xy: np.ndarray, radius: float | np.ndarray, index: pd.Index):
    """Spot circles in the image's pixel space, indexed by spot id."""
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import Identity

    radius = np.broadcast_to(np.asarray(radius, dtype=np.float64), (len(index),)).copy()
    return ShapesModel.parse(
        np.asarray(xy, dtype=np.float64),
        geometry=0,
        radius=radius,
        index=pd.Index(index, name=None),
        transformations={COORDINATE_SYSTEM: Identity()},
    )


def spots_table(
    counts: sparse.spmatrix | np.ndarray,
    *,
    obs: pd.DataFrame,
    var: pd.DataFrame,
    spot_ids: pd.Index,
    xy: np.ndarray,
    sample: str,
    patient: str,
) -> ad.AnnData:
    """The annotating table: raw counts in ``layers["counts"]``, log-normalised ``X``.

    ``X`` is ``normalize_total`` to 10,000 then ``log1p`` (scanpy), as float32.
    """
    import scanpy as sc
    from spatialdata.models import TableModel

    counts = sparse.csr_matrix(counts, dtype=np.float32)
    obs = obs.copy()
    obs[SAMPLE_KEY] = pd.Categorical([sample] * len(obs))
    obs[PATIENT_KEY] = pd.Categorical([patient] * len(obs))
    obs[REGION_KEY] = pd.Categorical([spots_key(sample)] * len(obs))
    obs[INSTANCE_KEY] = np.asarray(spot_ids)
    table = ad.AnnData(X=counts.copy(), obs=obs, var=var.copy())
    table.layers["counts"] = counts
    table.obsm["spatial"] = np.asarray(xy, dtype=np.float64)
    sc.pp.normalize_total(table, target_sum=1e4)
    sc.pp.log1p(table)
    table.var_names_make_unique()
    return TableModel.parse(table, region=spots_key(sample), region_key=REGION_KEY, instance_key=INSTANCE_KEY)


def assemble(
    *, sample: str, image, spots, table: ad.AnnData, mpp: float, mpp_source: MppSource
) -> SpatialData:
    """One SpatialData per section, with its physical scale recorded."""
    from spatialdata import SpatialData

    sdata = SpatialData(
        images={image_key(sample): image},
        shapes={spots_key(sample): spots},
        tables={TABLE_KEY: table},
    )
    set_mpp(sdata, image_key(sample), mpp, source=mpp_source)
    return sdata
