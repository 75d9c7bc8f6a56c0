"""The HiST-style multi-scale network: per-scale adapter, attention over scales, two heads."""

from __future__ import annotations

import torch
from torch import nn


class MultiScaleNet(nn.Module):
    """A shared adapter applied to each scale's features, attention weights over the scales, two heads.

    Parameters
    ----------
    n_features
        Width of a spot's features: the ``n_scales`` scales side by side, of equal width.
    n_genes
        Number of genes predicted.
    n_scales
        Number of scales (patch sizes).
    hidden, dropout
        Width of the adapter (and fused representation) and its dropout.

    Inputs
    ------
    ``x``: float tensor ``(spots, n_features)``.

    Outputs
    -------
    ``{"expression": (spots, n_genes), "tumor": (spots,) logits, "scale_weights": (spots, n_scales, 1)}``.
    """

    def __init__(self, n_features: int, n_genes: int, *, n_scales: int, hidden: int, dropout: float):
        super().__init__()
        if n_features % n_scales:
            msg = f"{n_features} features cannot be split into {n_scales} equal scales."
            raise ValueError(msg)
        self.n_scales, self.width = n_scales, n_features // n_scales
        self.adapter = nn.Sequential(nn.Linear(self.width, hidden), nn.GELU(), nn.Dropout(dropout))
        self.scale_embedding = nn.Parameter(torch.zeros(n_scales, hidden))
        self.attention = nn.Linear(hidden, 1)
        self.expression = nn.Linear(hidden, n_genes)
        self.tumor = nn.Linear(hidden, 1)

    def forward(self, x):
        h = self.adapter(x.view(len(x), self.n_scales, self.width)) + self.scale_embedding
        weights = torch.softmax(self.attention(h), dim=1)
        z = (weights * h).sum(dim=1)
        return {
            "expression": self.expression(z),
            "tumor": self.tumor(z).squeeze(-1),
            "scale_weights": weights,
        }
