"""``stnet``: a CNN fine-tuned end to end from the patches to expression (after ST-Net)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._base import register_method
from ._torch import TRAINING_DEFAULTS, TRAINING_SPECS, TorchPredictor


def augment_he(x, *, colour: float = 0.05):
    """Random dihedral transforms (flips, 90° rotations) and a mild per-channel colour jitter.

    ``x``: uint8 or float ``(N, 3, H, W)``; returns float in [0, 1]. H&E has no canonical orientation,
    so the eight dihedral transforms are label-preserving; the colour jitter (gain and offset per
    channel, up to ``colour``) mimics stain and scanner variation.
    """
    import torch

    x = x.float() / 255.0 if x.dtype == torch.uint8 else x
    n = len(x)
    flip = torch.rand(n, device=x.device) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    turns = torch.randint(0, 4, (n,), device=x.device)
    x = torch.stack([torch.rot90(image, int(k), dims=(-2, -1)) for image, k in zip(x, turns, strict=True)])
    gain = 1 + colour * (2 * torch.rand(n, 3, 1, 1, device=x.device) - 1)
    offset = colour * (2 * torch.rand(n, 3, 1, 1, device=x.device) - 1)
    return (x * gain + offset).clamp_(0, 1)


class _Paired:
    """Patches of a section paired with standardised targets, for the DataLoader."""

    def __init__(self, patches, targets: np.ndarray):
        self.patches, self.targets = patches, targets

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, i):
        import torch

        return self.patches[i], torch.as_tensor(self.targets[i], dtype=torch.float32)


@register_method
class STNetPredictor(TorchPredictor):
    """ST-Net: a pretrained CNN fine-tuned end to end on the patches, with a linear head.

    Reads the image itself (patches of ``patch_um`` around each spot, resampled to the encoder's input
    size, stain normalised when :func:`hist2st_tk.pp.normalize_stain` was called), not ``obsm`` features.
    Augmentation (flips, 90° rotations, colour jitter) is on by default. Targets are standardised per
    gene; the loss is mean squared error.

    Hyper-parameters
    ----------------
    encoder, weights
        The backbone (default ``lite0`` with its ImageNet weights) and its weights.
    patch_um
        Edge of the patch in microns.
    augment
        Augment the training patches.
    lr
        Learning rate of AdamW (fine-tuning: small).
    """

    method = "stnet"
    standardise_features = False
    defaults: ClassVar[dict[str, Any]] = {
        **TRAINING_DEFAULTS,
        "max_epochs": 5,
        "batch_size": 32,
        "lr": 1e-4,
        "patience": 2,
        "encoder": "lite0",
        "weights": None,
        "patch_um": 112.0,
        "augment": True,
        "num_workers": 0,
    }
    hparam_specs: ClassVar[dict[str, dict[str, Any]]] = {
        **TRAINING_SPECS,
        "weights": {"type": ("str", "null")},
    }

    def __init__(self, *, use_rep=(), seed: int = 0, center: bool = False, **hparams: Any):
        if use_rep or center:
            msg = "`stnet` reads the patches from the image, not obsm features: drop `use_rep` and `center`."
            raise TypeError(msg)
        super().__init__(use_rep=[], seed=seed, **hparams)

    # -- inputs: patches, not obsm ---------------------------------------------------------------
    def _describe_inputs(self, sdata, table, table_key: str) -> dict[str, dict]:
        return {"patches": {"encoder": self.hparams["encoder"], "patch_um": float(self.hparams["patch_um"])}}

    def _section_inputs(self, sdata, table, table_key: str, *, recorded: dict):
        from .._image import PatchDataset
        from ..encoders import get_encoder_spec
        from ..pp._features import patch_reader, stain_transform
        from ..pp._patches import patch_layout

        spec = get_encoder_spec(self.hparams["encoder"])
        layout = patch_layout(sdata, self.hparams["patch_um"], input_px=spec.input_px, table_key=table_key)
        transform = stain_transform(sdata, layout.image_key, stain=None)
        return PatchDataset(layout, patch_reader(sdata, layout), out_px=spec.input_px, transform=transform)

    # -- hooks of TorchPredictor: patches in, only the targets standardised ------------------------
    def build_module(self, n_features: int, n_genes: int):
        del n_features  # the network reads the patches, not a feature matrix
        from ..encoders import build_encoder
        from ..nn import STNet

        backbone, spec = build_encoder(self.hparams["encoder"], weights=self.hparams["weights"])
        # train mode: build_encoder returns the backbone in eval mode, but it is fine-tuned
        return STNet(backbone, n_genes, mean=spec.mean, std=spec.std, input_px=spec.input_px).train()

    def training_data(self, features, targets, extras, indices):
        from torch.utils.data import ConcatDataset

        del extras  # no targets besides expression
        return ConcatDataset([_Paired(features[i], self._standardised_targets(targets[i])) for i in indices])

    def prediction_batches(self, patches):
        from torch.utils.data import DataLoader

        return DataLoader(patches, batch_size=self.hparams["batch_size"])

    def augmentation(self):
        return augment_he if self.hparams["augment"] else None

    def config(self) -> dict[str, Any]:
        config = super().config()
        if config["hparams"].get("weights") is not None:  # a Path given at fit: plain JSON
            config["hparams"]["weights"] = str(config["hparams"]["weights"])
        return config
