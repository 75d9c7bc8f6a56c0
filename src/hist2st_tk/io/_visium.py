"""Placeholder replaced by the Visium reader."""

from __future__ import annotations


def read_visium(path, **kwargs):  # pragma: no cover - replaced below
    raise NotImplementedError
