"""Benchmarks (``hist2st bench``): speed and accuracy tables on the real data; numbers name their protocol."""

from __future__ import annotations

from .._protocols import HER2ST6, PANELS, REFERENCE, loso_folds, protocol_folds

__all__ = ["HER2ST6", "PANELS", "REFERENCE", "loso_folds", "protocol_folds"]
