"""``hespotex``: a dual-stream graph model after HESpotEx (image stream + graph attention autoencoder + GCN decoder)."""

from __future__ import annotations

from typing import Any, ClassVar

from ._base import register_method
from ._graph import GRAPH_DEFAULTS, GraphPredictor, geometric_nn


def _network(n_features: int, n_genes: int, *, hidden: int, latent: int, heads: int, dropout: float):
    import torch
    from torch import nn

    GATConv, GCNConv = geometric_nn().GATConv, geometric_nn().GCNConv  # noqa: N806

    if hidden % heads:
        msg = (
            f"`hidden={hidden}` must be a multiple of `heads={heads}` (the attention heads are concatenated)."
        )
        raise ValueError(msg)

    class HESpotExNet(nn.Module):
        """Image stream (MLP) and graph stream (2 GAT layers) fused, decoded by a GCN layer to a low-rank
        expression head; a GAT decoder reconstructs the features from the graph latent (the autoencoder)."""

        def __init__(self):
            super().__init__()
            self.image = nn.Sequential(
                nn.Linear(n_features, hidden), nn.ELU(), nn.Dropout(dropout), nn.Linear(hidden, latent)
            )
            self.encoder1 = GATConv(n_features, hidden // heads, heads=heads, dropout=dropout)
            self.encoder2 = GATConv(hidden, latent, heads=1)
            self.reconstruct1 = GATConv(latent, hidden // heads, heads=heads)
            self.reconstruct2 = nn.Linear(hidden, n_features)
            # normalize=False: the block carries D^-1/2 (A + I) D^-1/2 computed on the whole graph
            self.decoder = GCNConv(2 * latent, hidden, normalize=False)
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

    return HESpotExNet()


@register_method
class HESpotExPredictor(GraphPredictor):
    """HESpotEx-style dual-stream graph predictor.

    Reads the spot features ``use_rep`` and the spatial graph ``obsp[graph_key]`` (from
    :func:`hist2st_tk.pp.spatial_graph`). The image stream is an MLP on each spot's features; the graph
    stream is a graph attention autoencoder (two GAT layers encode the features of the spot and its
    neighbours to a latent, a GAT layer and a linear layer reconstruct the features from it). The two
    latents are concatenated and decoded to expression by a graph convolution (GCN) layer followed by a
    linear map to the genes, so that thousands of genes cost one matrix, not messages per gene.
    Loss: mean squared error on standardised expression plus ``reconstruction_weight`` times that of
    the reconstructed (standardised) features. Trained and applied on spatial blocks of ``batch_size``
    spots with their 3-hop halo (exact, no dense adjacency; see :mod:`hist2st_tk.models._graph`).

    Hyper-parameters
    ----------------
    hidden, latent, heads, dropout
        Width of the hidden layers, of each stream's latent, number of attention heads, dropout.
    reconstruction_weight
        Weight of the autoencoder's reconstruction loss.
    graph_key
        ``obsp`` key of the spatial graph.
    """

    method = "hespotex"
    n_hops = 3  # two GAT encoder layers, then the GCN decoder (or the GAT reconstruction layer)
    defaults: ClassVar[dict[str, Any]] = {
        **GRAPH_DEFAULTS,
        "hidden": 128,
        "latent": 64,
        "heads": 4,
        "dropout": 0.2,
        "reconstruction_weight": 0.1,
    }

    def build_module(self, n_features: int, n_genes: int):
        return _network(
            n_features,
            n_genes,
            hidden=self.hparams["hidden"],
            latent=self.hparams["latent"],
            heads=self.hparams["heads"],
            dropout=self.hparams["dropout"],
        )

    def loss(self, outputs, batch):
        import torch.nn.functional as F

        expression = F.mse_loss(outputs["expression"], batch[1])
        reconstruction = F.mse_loss(outputs["reconstruction"], outputs["features"])
        return expression + self.hparams["reconstruction_weight"] * reconstruction
