"""Data sets: real HER2ST sections (downloaded once, cached, checksummed) and synthetic sections."""

from __future__ import annotations

from ._her2st import HER2ST_SECTIONS, her2st
from ._synthetic import synthetic

__all__ = ["HER2ST_SECTIONS", "her2st", "synthetic"]
