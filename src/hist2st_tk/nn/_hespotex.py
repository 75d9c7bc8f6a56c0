"""The HESpotEx-style dual-stream graph network: image MLP + graph attention autoencoder, GCN decoder."""

from __future__ import annotations

import torch
from torch import nn

from ._geometric import geometric_nn


class HESpotExNet(nn.Module):
    """Image stream (MLP) and graph stream (2 GAT layers) fused, decoded by a GCN layer to a low-rank
    expression head; a GAT layer and a linear layer reconstruct the features from the graph latent.

    Parameters
    ----------
    n_features
        Width of a spot's (standardised) features.
    n_genes
        Number of genes predicted.
    hidden, latent
        Width of the hidden layers and of each stream's latent.
    heads
        Attention heads of the GAT layers; ``hidden`` must be a multiple of it (the heads are concatenated).
    dropout
        Dropout of the image stream, the GAT encoder and the decoder.

    Inputs
    ------
    One spatial block as a dict: ``x`` ``(nodes, n_features)`` with the block's own (core) spots first,
    ``edge_index`` ``(2, edges)``, ``edge_weight`` ``(edges,)`` (GCN-normalised, self-loops included) and
    ``n_core``, the number of core spots.

    Outputs
    -------
    ``{"expression": (n_core, n_genes), "reconstruction": (n_core, n_features), "features": (n_core,
    n_features)}``: standardised expression, the reconstructed features and the features themselves.
    """

    def __init__(
        self, n_features: int, n_genes: int, *, hidden: int, latent: int, heads: int, dropout: float
    ):
        if hidden % heads:
            msg = (
                f"`hidden={hidden}` must be a multiple of `heads={heads}` (the attention heads are "
                "concatenated)."
            )
            raise ValueError(msg)
        super().__init__()
        layers = geometric_nn()
        self.image = nn.Sequential(
            nn.Linear(n_features, hidden), nn.ELU(), nn.Dropout(dropout), nn.Linear(hidden, latent)
        )
        self.encoder1 = layers.GATConv(n_features, hidden // heads, heads=heads, dropout=dropout)
        self.encoder2 = layers.GATConv(hidden, latent, heads=1)
        self.reconstruct1 = layers.GATConv(latent, hidden // heads, heads=heads)
        self.reconstruct2 = nn.Linear(hidden, n_features)
        # normalize=False: the block carries D^-1/2 (A + I) D^-1/2 computed on the whole graph
        self.decoder = layers.GCNConv(2 * latent, hidden, normalize=False)
        self.expression = nn.Linear(hidden, n_genes)
        self.dropout = nn.Dropout(dropout)
        self.act = nn.ELU()

    def forward(self, inputs):
        x, edges, weight = inputs["x"], inputs["edge_index"], inputs["edge_weight"]
        n_core = int(inputs["n_core"])
        z = self.encoder2(self.dropout(self.act(self.encoder1(x, edges))), edges)
        fused = torch.cat([self.image(x), z], dim=1)
        h = self.dropout(self.act(self.decoder(fused, edges, weight)))
        reconstruction = self.reconstruct2(self.act(self.reconstruct1(z, edges)))
        return {
            "expression": self.expression(h[:n_core]),
            "reconstruction": reconstruction[:n_core],
            "features": x[:n_core],
        }
