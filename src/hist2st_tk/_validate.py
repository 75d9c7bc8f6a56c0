"""Argument checks shared by every namespace, each with a message that names the argument."""

from __future__ import annotations

from numbers import Integral


def check_count(value: int, name: str) -> int:
    """``value`` as an int, or raise when it is not an integer of at least 1 (booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        msg = f"`{name}` must be an integer, got {value!r}."
        raise TypeError(msg)
    if value < 1:
        msg = f"`{name}` must be at least 1, got {value}."
        raise ValueError(msg)
    return int(value)
