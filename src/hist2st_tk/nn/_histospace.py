"""The HistoSPACE head: a convolution block on the autoencoder's feature map, then two linear layers."""

from __future__ import annotations

import math

from torch import nn


class HistoSpaceNet(nn.Module):
    """One convolution block on a feature map (when there is one), then two fully connected layers.

    Parameters
    ----------
    n_features
        Width of the (standardised) feature vector of a spot.
    n_genes
        Number of genes predicted.
    map_channels
        Channels of the flattened square feature map the features hold (the block is then conv 3x3,
        batch norm, ReLU, 2x2 max-pool), or ``None`` for plain feature vectors (no block).
    hidden, dropout
        Width of the first fully connected layer and its dropout.

    Inputs
    ------
    ``x``: float tensor ``(spots, n_features)``.

    Outputs
    -------
    ``{"expression": (spots, n_genes)}``, standardised expression.
    """

    def __init__(
        self, n_features: int, n_genes: int, *, map_channels: int | None, hidden: int, dropout: float
    ):
        super().__init__()
        self.channels = map_channels
        self.block = None
        width = self._build_block(n_features, map_channels) if map_channels else n_features
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(width, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_genes),
        )

    def _build_block(self, n_features: int, channels: int) -> int:
        """Set ``self.side`` and ``self.block``; returns the width of the block's flattened output."""
        side = math.isqrt(n_features // channels)
        if side * side * channels != n_features:
            msg = f"{n_features} features are not a square map of {channels} channels."
            raise ValueError(msg)
        self.side = side
        self.block = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.MaxPool2d(2) if side >= 2 else nn.Identity(),
        )
        return channels * max(side // 2, 1) ** 2

    def forward(self, x):
        if self.block is not None:
            x = self.block(x.view(len(x), self.channels, self.side, self.side))
        return {"expression": self.head(x)}
