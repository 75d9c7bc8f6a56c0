"""The dual-modality DeepONet: a branch net on the image features, a trunk net on the gene (and position)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def mlp(sizes: Sequence[int], dropout: float) -> nn.Sequential:
    """Linear layers of the given sizes, with GELU and dropout between them (none after the last)."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.GELU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class DeepONet(nn.Module):
    """Branch net (spot features -> ``basis`` coefficients), trunk net (gene embedding, optionally with the
    position -> ``basis`` functions); expression = their inner product + a per-gene bias. A classification
    head reads the branch's hidden layer.

    Parameters
    ----------
    n_features
        Width of a spot's (reduced, standardised) features.
    n_genes
        Number of genes the trunk knows.
    hidden, basis, gene_dim
        Width of the hidden layers, number of basis functions, size of the gene embedding.
    position_dim
        Width of the position features fed to the trunk (0: the trunk reads the gene only).
    n_classes
        Classes of the classification head (at least one output is kept).
    dropout
        Dropout of the branch net.

    Inputs
    ------
    A dict: ``x`` ``(spots, n_features)`` and ``position`` ``(spots, position_dim)``; optionally ``genes``,
    the indices of the genes to evaluate (all by default).

    Outputs
    -------
    ``{"expression": (spots, genes), "logits": (spots, max(n_classes, 1))}``.
    """

    def __init__(
        self,
        n_features: int,
        n_genes: int,
        *,
        hidden: int,
        basis: int,
        gene_dim: int,
        position_dim: int,
        n_classes: int,
        dropout: float,
    ):
        super().__init__()
        self.position_dim = position_dim
        self.branch = mlp([n_features, hidden, hidden], dropout)
        self.coefficients = nn.Linear(hidden, basis)
        self.genes = nn.Embedding(n_genes, gene_dim)
        self.trunk = mlp([gene_dim + position_dim, hidden, basis], 0.0)
        self.bias = nn.Parameter(torch.zeros(n_genes))
        self.classifier = nn.Linear(hidden, max(n_classes, 1))

    def forward(self, inputs, genes=None):
        genes = torch.arange(len(self.bias), device=self.bias.device) if genes is None else genes
        h = nn.functional.gelu(self.branch(inputs["x"]))
        coefficients = self.coefficients(h)
        embedding = self.genes(genes)
        if self.position_dim:  # one trunk evaluation per (spot, gene)
            n, g = len(coefficients), len(genes)
            trunk_in = torch.cat(
                [embedding.expand(n, g, -1), inputs["position"].unsqueeze(1).expand(n, g, -1)], dim=-1
            )
            expression = (coefficients.unsqueeze(1) * self.trunk(trunk_in)).sum(-1)
        else:
            expression = coefficients @ self.trunk(embedding).T
        return {"expression": expression + self.bias[genes], "logits": self.classifier(h)}
