"""Plots: H&E with spots coloured by measured or predicted expression and annotations."""

from __future__ import annotations

from ._evaluation import gene_scores, training_history
from ._expression import predicted_vs_observed, spatial_expression
from ._spatial import spatial
from ._survival import km
from ._tumor import tumor_map

__all__ = [
    "gene_scores",
    "km",
    "predicted_vs_observed",
    "spatial",
    "spatial_expression",
    "training_history",
    "tumor_map",
]
