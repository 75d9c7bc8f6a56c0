"""Preprocessing: tissue, stain, patches at physical size, image features, spatial graph, gene panels."""

from __future__ import annotations

from ._autoencoder import fit_autoencoder
from ._features import image_features
from ._genes import select_genes
from ._graph import spatial_graph
from ._patches import patches

__all__ = ["fit_autoencoder", "image_features", "patches", "select_genes", "spatial_graph"]
