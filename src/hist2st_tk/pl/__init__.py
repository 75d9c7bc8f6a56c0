"""Plots: H&E with spots coloured by measured or predicted expression and annotations."""

from __future__ import annotations

from ._spatial import spatial

__all__ = ["spatial"]
