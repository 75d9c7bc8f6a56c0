"""``hist_multiscale``: the HiST idea, patches at several physical sizes fused, with an expression and a tumor head."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd

from .._constants import TUMOR_SCORE_KEY
from ._base import register_method
from ._torch import TRAINING_DEFAULTS, TorchPredictor


@register_method
class MultiScalePredictor(TorchPredictor):
    """HiST-style multi-scale predictor with a tumor head.

    Reads one ``obsm`` feature key per patch size (e.g. ``["X_lite0_56um", "X_lite0_112um", "X_lite0_224um"]``
    from ``ht.pp.image_features(sdata, patch_um=[56, 112, 224])``). A shared adapter maps each scale's
    features to ``hidden`` units, attention weights fuse the scales, and two heads predict expression
    (mean squared error on standardised targets) and the probability of tumor (binary cross-entropy on
    spots whose ``obs[label_key]`` is known, weighted by ``tumor_weight``).

    Hyper-parameters
    ----------------
    hidden, dropout
        Width of the fused representation and its dropout.
    label_key
        Boolean ``obs`` column of tumor labels (HER2ST's ``"tumor"``); without any labelled spot the tumor
        head is not trained and no ``tumor_score`` is written.
    tumor_weight
        Weight of the tumor loss.
    """

    method = "hist_multiscale"
    defaults: ClassVar[dict[str, Any]] = {
        **TRAINING_DEFAULTS,
        "hidden": 256,
        "dropout": 0.25,
        "label_key": "tumor",
        "tumor_weight": 0.5,
    }

    def build_module(self, n_features: int, n_genes: int):
        from ..nn import MultiScaleNet

        return MultiScaleNet(
            n_features,
            n_genes,
            n_scales=len(self.use_rep),
            hidden=self.hparams["hidden"],
            dropout=self.hparams["dropout"],
        )

    def extra_targets(self, obs: pd.DataFrame) -> list[np.ndarray]:
        key = self.hparams["label_key"]
        if key not in obs:
            return [np.zeros(len(obs), np.float32), np.zeros(len(obs), np.float32)]
        labels = obs[key].astype("boolean")
        known = labels.notna().to_numpy()
        return [labels.fillna(value=False).to_numpy(dtype=np.float32), known.astype(np.float32)]

    def _fit(self, features, targets, sections, obs) -> None:
        labelled = sum(int(self.extra_targets(o)[1].sum()) for o in obs)
        super()._fit(features, targets, sections, obs)
        self.history["tumor_labelled_spots"] = [labelled]

    def loss(self, outputs, batch):
        import torch.nn.functional as F

        _, targets, labels, known = batch
        loss = F.mse_loss(outputs["expression"], targets)
        if known.sum() > 0:
            tumor = F.binary_cross_entropy_with_logits(
                outputs["tumor"], labels, weight=known, reduction="sum"
            )
            loss = loss + self.hparams["tumor_weight"] * tumor / known.sum()
        return loss

    def annotations(self, outputs) -> dict[str, np.ndarray]:
        if not self.history.get("tumor_labelled_spots", [0])[0]:
            return {}
        return {TUMOR_SCORE_KEY: outputs["tumor"].sigmoid().numpy()}
