"""Named evaluation protocols and benchmarks (``hist2st bench``); numbers always name their protocol."""

from __future__ import annotations

from ._protocols import HER2ST6, REFERENCE, loso_folds, ridge_loso

__all__ = ["HER2ST6", "REFERENCE", "loso_folds", "ridge_loso"]
