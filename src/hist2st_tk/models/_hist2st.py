"""``hist2st``: Hist2ST-style, patch encoder + transformer over the spots + GraphSAGE, with an optional ZINB loss."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._base import register_method
from ._graph import GRAPH_DEFAULTS, GraphPredictor, SectionGraph


def zinb_nll(counts, mean, theta, pi_logit, eps: float = 1e-8):
    """Mean negative log-likelihood of counts under a zero-inflated negative binomial (mean, dispersion
    ``theta``, zero-inflation logit)."""
    import torch
    import torch.nn.functional as F

    log_theta_mu = torch.log(theta + mean + eps)
    nb_zero = theta * (torch.log(theta + eps) - log_theta_mu)  # log NB(0)
    zero = torch.logaddexp(pi_logit, nb_zero) - F.softplus(pi_logit)  # log(pi + (1 - pi) NB(0))
    nonzero = (
        -F.softplus(pi_logit)
        + nb_zero
        + counts * (torch.log(mean + eps) - log_theta_mu)
        + torch.lgamma(counts + theta)
        - torch.lgamma(theta)
        - torch.lgamma(counts + 1)
    )
    return -torch.where(counts < 0.5, zero, nonzero).mean()


@register_method
class Hist2STPredictor(GraphPredictor):
    """Hist2ST-style predictor: patch encoder, transformer over the spots, GraphSAGE on the spatial graph.

    The patch encoder is the frozen image encoder whose features are ``use_rep`` (a CNN, e.g. ``lite0``)
    followed by a trainable adapter. A transformer encoder lets every spot of a spatial block (``batch_size``
    spots and their 3-hop halo) attend to every other; a GraphSAGE layer (residual) then mixes each spot with
    its graph neighbours ``obsp[graph_key]``. Loss: mean squared error on standardised expression, plus,
    with ``zinb_weight > 0``, the negative log-likelihood of the raw counts (``layers["counts"]``) of the panel
    genes under a zero-inflated negative binomial whose mean is the spot's library size factor times a
    predicted rate.

    Hyper-parameters
    ----------------
    hidden, heads, layers, dropout
        Width, attention heads and layers of the transformer, dropout.
    zinb_weight
        Weight of the ZINB loss on raw counts (0: off).
    graph_key
        ``obsp`` key of the spatial graph.
    """

    method = "hist2st"
    n_hops = 3  # the block's halo: context for the transformer; GraphSAGE needs 1 hop
    defaults: ClassVar[dict[str, Any]] = {
        **GRAPH_DEFAULTS,
        "hidden": 128,
        "heads": 4,
        "layers": 2,
        "dropout": 0.1,
        "zinb_weight": 0.0,
    }

    def build_module(self, n_features: int, n_genes: int):
        from ..nn import Hist2STNet

        return Hist2STNet(
            n_features,
            n_genes,
            hidden=self.hparams["hidden"],
            heads=self.hparams["heads"],
            layers=self.hparams["layers"],
            dropout=self.hparams["dropout"],
        )

    def _section_inputs(self, sdata, table, table_key: str, *, recorded: dict) -> SectionGraph:
        inputs = super()._section_inputs(sdata, table, table_key, recorded=recorded)
        if "counts" in table.layers:  # read only when the ZINB loss is on (see block_extras)
            inputs.extra["counts"] = (table.layers["counts"], table.var_names)
        return inputs

    def block_extras(self, inputs: SectionGraph) -> list[np.ndarray]:
        if not self.hparams["zinb_weight"]:
            return []
        if "counts" not in inputs.extra:
            msg = (
                "`zinb_weight > 0` needs the raw counts in `layers['counts']` of every training table; "
                "pass `zinb_weight=0` for tables without them."
            )
            raise KeyError(msg)
        matrix, var_names = inputs.extra["counts"]
        totals = np.asarray(matrix.sum(axis=1), dtype=np.float64).ravel()
        panel = matrix[:, var_names.get_indexer(self.genes)]
        panel = np.asarray(panel.toarray() if hasattr(panel, "toarray") else panel, dtype=np.float32)
        size_factor = (totals / max(np.median(totals), 1.0)).astype(np.float32)[:, None]
        return [panel, size_factor]

    def loss(self, outputs, batch):
        import torch.nn.functional as F

        loss = F.mse_loss(outputs["expression"], batch[1])
        if self.hparams["zinb_weight"]:
            counts, size_factor = batch[2], batch[3]
            mean = size_factor * outputs["log_rate"].clamp(max=15).exp()
            theta = outputs["log_theta"].clamp(-10, 10).exp()
            loss = loss + self.hparams["zinb_weight"] * zinb_nll(counts, mean, theta, outputs["pi_logit"])
        return loss
