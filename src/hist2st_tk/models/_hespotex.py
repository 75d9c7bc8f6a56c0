"""``hespotex``: a dual-stream graph model after HESpotEx (image stream + graph attention autoencoder + GCN decoder)."""

from __future__ import annotations

from typing import Any, ClassVar

from ._base import register_method
from ._graph import GRAPH_DEFAULTS, GraphPredictor


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
        from ..nn import HESpotExNet

        return HESpotExNet(
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
