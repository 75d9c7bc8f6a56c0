"""Readers: paired H&E + spot expression into SpatialData, one object per section."""

from __future__ import annotations

from .._scale import get_mpp, set_mpp
from ._st import read_st
from ._visium import read_visium
from ._write import write_zarr
from ._wsi import read_wsi

__all__ = ["get_mpp", "read_st", "read_visium", "read_wsi", "set_mpp", "write_zarr"]
