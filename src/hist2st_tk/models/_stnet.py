"""``stnet``: a CNN fine-tuned end to end from the patches to expression (after ST-Net)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .._logging import logger
from ._base import Predictor, register_method
from ._schema import check_shapes, split_tensors
from ._torch import (
    _RUNTIME,
    TRAINING_DEFAULTS,
    TRAINING_SPECS,
    load_module,
    standardisation,
    validation_section,
)


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


def _network(encoder: str, n_genes: int, *, weights):
    import torch
    from torch import nn

    from ..encoders import build_encoder

    backbone, spec = build_encoder(encoder, weights=weights)

    class STNet(nn.Module):
        """Encoder + linear head; takes RGB as uint8 or as float in [0, 1]."""

        def __init__(self):
            super().__init__()
            self.backbone = backbone
            self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1))
            with torch.no_grad():
                width = backbone(torch.zeros(1, 3, spec.input_px, spec.input_px)).shape[1]
            self.head = nn.Linear(width, n_genes)

        def forward(self, x):
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x
            return {"expression": self.head(self.backbone((x - self.mean) / self.std))}

    return STNet().train(), spec


@register_method
class STNetPredictor(Predictor):
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
        from ..encoders import get_encoder_spec
        from ..pp._features import _reader, _stain_transform
        from ..pp._patches import PatchDataset, patch_layout

        spec = get_encoder_spec(self.hparams["encoder"])
        layout = patch_layout(sdata, self.hparams["patch_um"], input_px=spec.input_px, table_key=table_key)
        transform = _stain_transform(sdata, layout.image_key, stain=None)
        return PatchDataset(layout, _reader(sdata, layout), out_px=spec.input_px, transform=transform)

    # -- fit / predict ----------------------------------------------------------------------------
    def _fit(self, features, targets, sections, obs) -> None:
        import torch
        from torch.utils.data import ConcatDataset

        from ._training import TrainingConfig, train

        held = validation_section(self.hparams["validation"], len(sections), self.seed)
        train_idx = [i for i in range(len(sections)) if i != held]
        y_mean, y_std = standardisation([targets[i] for i in train_idx])
        self._stats = {"y_mean": y_mean, "y_std": y_std}

        def paired(indices):
            return ConcatDataset([_Paired(features[i], (targets[i] - y_mean) / y_std) for i in indices])

        torch.manual_seed(self.seed)
        self.module, _ = _network(
            self.hparams["encoder"], targets[0].shape[1], weights=self.hparams["weights"]
        )
        config = TrainingConfig(
            **{k: self.hparams[k] for k in TRAINING_DEFAULTS if k != "validation"},
            seed=self.seed,
            num_workers=self.hparams["num_workers"],
        )
        logger.info(
            "fine-tuning %s on %d patches", self.hparams["encoder"], sum(len(features[i]) for i in train_idx)
        )
        self.history = train(
            self.module,
            self.loss,
            paired(train_idx),
            None if held is None else paired([held]),
            config,
            augment=augment_he if self.hparams["augment"] else None,
        )
        if held is not None:
            self.history["validation_section"] = [sections[held]]

    @staticmethod
    def loss(outputs, batch):
        import torch.nn.functional as F

        return F.mse_loss(outputs["expression"], batch[1])

    def _predict(self, patches) -> np.ndarray:
        import torch
        from torch.utils.data import DataLoader

        self.module.eval()
        outputs = []
        with torch.inference_mode():
            for batch in DataLoader(patches, batch_size=self.hparams["batch_size"]):
                outputs.append(self.module(batch)["expression"])
        predicted = torch.cat(outputs).numpy()
        return predicted * self._stats["y_std"] + self._stats["y_mean"]

    # -- tensors ----------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        config = super().config()
        config["hparams"] = {k: v for k, v in self.hparams.items() if k not in _RUNTIME}
        if config["hparams"].get("weights") is not None:
            config["hparams"]["weights"] = str(config["hparams"]["weights"])
        return config

    def _tensors(self):
        import torch

        stats = {f"stats.{k}": torch.as_tensor(v, dtype=torch.float32) for k, v in self._stats.items()}
        return {**stats, **{f"module.{k}": v for k, v in self.module.state_dict().items()}}

    def _load_tensors(self, tensors) -> None:
        stats, state = split_tensors(tensors, ("stats.", "module."))
        n_genes = len(self.genes)
        check_shapes(stats, {"y_mean": (n_genes,), "y_std": (n_genes,)}, prefix="stats.")
        self._stats = {k: v.numpy() for k, v in stats.items()}  # float32, as at fit
        self.module, _ = _network(self.hparams["encoder"], n_genes, weights=self.hparams["weights"])
        load_module(self.module, state)
