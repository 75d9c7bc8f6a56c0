"""Readers (paired H&E + spot expression, or H&E alone, into SpatialData, one object per section) and
crash-safe ``.zarr`` stores."""

from __future__ import annotations

from .._scale import get_mpp, set_mpp
from ._st import read_st
from ._store import read_zarr, update_zarr, write_zarr
from ._visium import read_visium
from ._wsi import read_wsi

__all__ = [
    "get_mpp",
    "read_st",
    "read_visium",
    "read_wsi",
    "read_zarr",
    "set_mpp",
    "update_zarr",
    "write_zarr",
]
