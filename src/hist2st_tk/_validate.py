"""Argument checks shared by every namespace, each with a message that names the argument."""

from __future__ import annotations

import math
from numbers import Integral, Real


def check_count(value: int, name: str) -> int:
    """``value`` as an int, or raise when it is not an integer of at least 1 (booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        msg = f"`{name}` must be an integer, got {value!r}."
        raise TypeError(msg)
    if value < 1:
        msg = f"`{name}` must be at least 1, got {value}."
        raise ValueError(msg)
    return int(value)


def check_microns(value: float, name: str) -> float:
    """``value`` as a float, or raise when it is not a positive, finite length in microns."""
    if isinstance(value, bool) or not isinstance(value, Real):
        msg = f"`{name}` must be a positive number of microns, got {value!r}."
        raise TypeError(msg)
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        msg = f"`{name}` must be a positive, finite number of microns, got {value!r}."
        raise ValueError(msg)
    return number


def check_spatialdata(sdata, name: str = "sdata", *, or_sequence: bool = False) -> None:
    """Raise a TypeError naming the readers when ``sdata`` is not a SpatialData (e.g. an AnnData);
    ``or_sequence``: the argument ``name`` may also be a sequence of them (the message says so)."""
    from spatialdata import SpatialData

    if not isinstance(sdata, SpatialData):
        hint = (
            " An AnnData is the table of a section: pass the SpatialData that holds it (`sdata['table']` is "
            "the table)."
            if type(sdata).__name__ == "AnnData"
            else ""
        )
        msg = (
            f"`{name}` must be a SpatialData (one tissue section){' or a sequence of them' if or_sequence else ''}, "
            f"got {type(sdata).__name__}. Read one with "
            "`ht.io.read_st`, `ht.io.read_visium`, `ht.io.read_wsi`, `ht.io.read_zarr` or `ht.datasets.her2st`."
            + hint
        )
        raise TypeError(msg)
