"""Preprocessing: tissue, stain, patches at physical size, image features, spatial graph, gene panels.

The functions arrive with the image-features work (see the issues); the namespace exists so that the
``read -> pp -> tl -> pl`` layout is visible from the start.
"""

from __future__ import annotations

from ._genes import select_genes
from ._graph import spatial_graph

__all__ = ["select_genes", "spatial_graph"]
