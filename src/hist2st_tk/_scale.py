"""Physical scale: microns per pixel of every image, stored where it survives ``write``/``read_zarr``.

The value lives in ``sdata.attrs["hist2st_tk"]["mpp"][image_key] = {"mpp": float, "source": str}``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ._constants import ATTRS_KEY, MPP_SOURCES, MppSource
from ._docs import doc_params
from ._sdata import resolve_image_key
from ._validate import check_spatialdata

if TYPE_CHECKING:
    from spatialdata import SpatialData


def check_mpp(mpp: float) -> float:
    """Return ``mpp`` as a float or raise when it is not a positive, finite number."""
    try:
        value = float(mpp)
    except (TypeError, ValueError):
        msg = f"`mpp` must be a positive number of microns per pixel, got {mpp!r}."
        raise TypeError(msg) from None
    if not math.isfinite(value) or value <= 0:
        msg = f"`mpp` must be a positive, finite number of microns per pixel, got {mpp!r}."
        raise ValueError(msg)
    return value


def set_mpp(sdata: SpatialData, image_key: str, mpp: float, *, source: MppSource = "user") -> None:
    """Record the physical scale of an image.

    Writes ``sdata.attrs["hist2st_tk"]["mpp"][image_key]``, a dict with keys ``"mpp"`` and ``"source"``.

    Parameters
    ----------
    sdata
        The section.
    image_key
        Name of an image element of ``sdata``.
    mpp
        Microns per pixel of the image's full-resolution level.
    source
        Where the value comes from: ``"st_grid"`` (200 um pitch of legacy ST), ``"visium_spot"``
        (55 um Visium spot), ``"slide_metadata"`` or ``"user"``.
    """
    check_spatialdata(sdata)
    if image_key not in sdata.images:
        msg = f"No image {image_key!r} in the SpatialData; images: {list(sdata.images)}."
        raise KeyError(msg)
    if source not in MPP_SOURCES:
        msg = f"Unknown mpp source {source!r}; use one of {list(MPP_SOURCES)}."
        raise ValueError(msg)
    value = check_mpp(mpp)
    sdata.attrs.setdefault(ATTRS_KEY, {}).setdefault("mpp", {})[image_key] = {"mpp": value, "source": source}


@doc_params
def get_mpp(sdata: SpatialData, image_key: str | None = None) -> tuple[float, str]:
    """Microns per pixel of an image and where that value comes from.

    Parameters
    ----------
    sdata
        The section.
    {image_key}

    Returns
    -------
    ``(mpp, source)``.
    """
    check_spatialdata(sdata)
    if image_key is None:
        image_key = resolve_image_key(sdata, None)
    known = sdata.attrs.get(ATTRS_KEY, {}).get("mpp", {})
    if image_key not in known:
        msg = (
            f"The microns per pixel of image {image_key!r} is unknown (known for: {list(known)}). "
            f"Set it with `ht.io.set_mpp(sdata, {image_key!r}, mpp=..., source='user')`."
        )
        raise KeyError(msg)
    entry = known[image_key]
    return float(entry["mpp"]), str(entry["source"])


def mpp_from_grid(array_xy: np.ndarray, pixel_xy: np.ndarray, *, pitch_um: float) -> float:
    """Microns per pixel from a regular spot grid.

    ``pitch_um / median pixel distance`` over all pairs of spots that are direct neighbours on the
    array grid (x or y differing by exactly 1).

    Parameters
    ----------
    array_xy
        Integer grid coordinates, shape ``(n, 2)``.
    pixel_xy
        Spot centres in image pixels, shape ``(n, 2)``.
    pitch_um
        Centre-to-centre distance of grid neighbours in microns.
    """
    array_xy = np.asarray(array_xy, dtype=np.int64)
    pixel_xy = np.asarray(pixel_xy, dtype=np.float64)
    position = {tuple(a): i for i, a in enumerate(array_xy)}
    distances = [
        np.linalg.norm(pixel_xy[j] - pixel_xy[i])
        for i, (x, y) in enumerate(array_xy)
        for neighbour in ((x + 1, y), (x, y + 1))
        if (j := position.get(neighbour)) is not None
    ]
    if len(distances) < 3:
        msg = (
            f"Cannot derive microns per pixel from the spot grid: only {len(distances)} pairs of "
            "neighbouring spots. Pass `mpp=` explicitly."
        )
        raise ValueError(msg)
    return pitch_um / float(np.median(distances))
