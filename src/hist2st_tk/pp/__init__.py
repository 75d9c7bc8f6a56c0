"""Preprocessing: tissue, stain, patches at physical size, image features, spatial graph, gene panels."""

from __future__ import annotations

from ._autoencoder import fit_autoencoder
from ._features import image_features
from ._fourier import fourier_coords, fourier_features
from ._genes import select_genes
from ._graph import spatial_graph
from ._ipca import ipca
from ._model_features import model_features
from ._neighbors import aggregate_neighbors
from ._patches import patches
from ._perturb import perturb
from ._stain import normalize_stain, stain_normalizer, stain_reference
from ._tiles import tile_tissue
from ._tissue import tissue_mask

__all__ = [
    "aggregate_neighbors",
    "fit_autoencoder",
    "fourier_coords",
    "fourier_features",
    "image_features",
    "ipca",
    "model_features",
    "normalize_stain",
    "patches",
    "perturb",
    "select_genes",
    "spatial_graph",
    "stain_normalizer",
    "stain_reference",
    "tile_tissue",
    "tissue_mask",
]
