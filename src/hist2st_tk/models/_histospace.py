"""``histospace``: the HistoSPACE predictor, a small CNN on the frozen autoencoder's feature map."""

from __future__ import annotations

from typing import Any, ClassVar

from ._base import register_method
from ._torch import TRAINING_DEFAULTS, TRAINING_SPECS, TorchPredictor


@register_method
class HistoSpacePredictor(TorchPredictor):
    """HistoSPACE: a convolution block and two fully connected layers on frozen self-supervised features.

    With ``map_channels`` set (128 for the autoencoder), the features are the flattened feature map of the
    frozen autoencoder encoder (``ht.pp.image_features(sdata, encoder="autoencoder_map", weights=...)``),
    reshaped to ``(map_channels, side, side)``; the block is conv 3x3, batch norm, ReLU, max-pool.
    With ``map_channels=None`` the model starts from feature vectors (e.g. ``X_lite0``) and keeps the two
    fully connected layers only. Trained with the Huber loss on standardised targets.

    Hyper-parameters
    ----------------
    map_channels
        Channels of the feature map, or ``None`` for feature vectors.
    hidden, dropout
        Width of the first fully connected layer and its dropout.
    huber_delta
        Threshold of the Huber loss (in standard deviations of each gene).
    """

    method = "histospace"
    defaults: ClassVar[dict[str, Any]] = {
        **TRAINING_DEFAULTS,
        "map_channels": None,
        "hidden": 256,
        "dropout": 0.25,
        "huber_delta": 1.0,
    }
    hparam_specs: ClassVar[dict[str, dict[str, Any]]] = {
        **TRAINING_SPECS,
        "map_channels": {"type": ("int", "null"), "min": 1},
    }

    def build_module(self, n_features: int, n_genes: int):
        from ..nn import HistoSpaceNet

        return HistoSpaceNet(
            n_features,
            n_genes,
            map_channels=self.hparams["map_channels"],
            hidden=self.hparams["hidden"],
            dropout=self.hparams["dropout"],
        )

    def loss(self, outputs, batch):
        import torch.nn.functional as F

        return F.huber_loss(outputs["expression"], batch[1], delta=self.hparams["huber_delta"])
