"""The Image2Gene encoder: image features and binned positions to unit-length embeddings."""

from __future__ import annotations

from torch import nn
from torch.nn import functional as F


class Image2GeneNet(nn.Module):
    """Fully connected encoder of the image features, plus learnt embeddings of the x and y position bins.

    Parameters
    ----------
    n_features
        Width of a spot's (standardised) features.
    hidden, dim
        Width of the encoder's hidden layers and of the embedding.
    n_bins
        Position bins per axis (larger bins are clipped to the last one).
    use_coords
        Add the position embeddings (the tables are created either way, so the weights have one layout).
    dropout
        Dropout after the first layer.

    Inputs
    ------
    A dict: ``x`` ``(spots, n_features)`` and ``bins`` ``(spots, 2)`` int, the x and y position bins.

    Outputs
    -------
    ``{"embedding": (spots, dim)}``, of unit length.
    """

    def __init__(
        self, n_features: int, *, hidden: int, dim: int, n_bins: int, use_coords: bool, dropout: float
    ):
        super().__init__()
        self.n_bins, self.use_coords = n_bins, use_coords
        self.encoder = nn.Sequential(
            nn.Linear(n_features, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, dim),
        )
        self.position = nn.ModuleList([nn.Embedding(n_bins, dim), nn.Embedding(n_bins, dim)])

    def forward(self, inputs):
        embedding = self.encoder(inputs["x"])
        if self.use_coords:
            bins = inputs["bins"].clamp(0, self.n_bins - 1)
            embedding = embedding + self.position[0](bins[:, 0]) + self.position[1](bins[:, 1])
        return {"embedding": F.normalize(embedding, dim=1)}
