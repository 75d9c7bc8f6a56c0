"""The Hist2ST-style network: adapter, transformer over the spots of a block, GraphSAGE, ZINB head."""

from __future__ import annotations

from torch import nn
from torch.nn import functional as F

from ._geometric import geometric_nn


class Hist2STNet(nn.Module):
    """Adapter on the patch encoder's features, a transformer encoder over the spots of the block, a
    residual GraphSAGE layer on the spatial graph; heads for expression and for the ZINB parameters.

    Parameters
    ----------
    n_features
        Width of a spot's (standardised) features.
    n_genes
        Number of genes predicted.
    hidden, heads, layers
        Width, attention heads (``hidden`` must be a multiple of it) and layers of the transformer.
    dropout
        Dropout of the adapter and the transformer.

    Inputs
    ------
    One spatial block as a dict: ``x`` ``(nodes, n_features)`` with the core spots first, ``edge_index``
    ``(2, edges)`` and ``n_core``, the number of core spots.

    Outputs
    -------
    ``{"expression", "log_rate", "log_theta", "pi_logit"}``, each ``(n_core, n_genes)``: standardised
    expression, and the log mean rate, log dispersion and zero-inflation logit of the ZINB of the counts.
    """

    def __init__(
        self, n_features: int, n_genes: int, *, hidden: int, heads: int, layers: int, dropout: float
    ):
        if hidden % heads:
            msg = f"`hidden={hidden}` must be a multiple of `heads={heads}` (transformer attention heads)."
            raise ValueError(msg)
        super().__init__()
        self.adapter = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), nn.Dropout(dropout))
        layer = nn.TransformerEncoderLayer(
            hidden, heads, dim_feedforward=2 * hidden, dropout=dropout, batch_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.sage = geometric_nn().SAGEConv(hidden, hidden)
        self.expression = nn.Linear(hidden, n_genes)
        self.zinb = nn.Linear(hidden, 3 * n_genes)  # log mean rate, log dispersion, dropout logit

    def forward(self, inputs):
        n_core = int(inputs["n_core"])
        h = self.adapter(inputs["x"])
        h = self.transformer(h.unsqueeze(0)).squeeze(0)
        h = F.gelu(self.sage(h, inputs["edge_index"])) + h
        log_rate, log_theta, pi_logit = self.zinb(h[:n_core]).chunk(3, dim=1)
        return {
            "expression": self.expression(h[:n_core]),
            "log_rate": log_rate,
            "log_theta": log_theta,
            "pi_logit": pi_logit,
        }
