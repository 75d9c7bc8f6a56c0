"""Base of the neural predictors: standardisation, a validation section, Lightning training, tensors on disk."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ._base import Predictor
from ._schema import check_shapes, split_tensors

#: Hyper-parameters every neural predictor takes (see :class:`~hist2st_tk.models._training.TrainingConfig`).
TRAINING_DEFAULTS: dict[str, Any] = {
    "max_epochs": 30,
    "batch_size": 64,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "patience": 5,
    "validation": "auto",
    "accelerator": "auto",
    "devices": "auto",
    "strategy": "auto",
    "precision": None,
    "checkpoint_dir": None,
    "progress": False,
}
#: The ``model.json`` spec of the training hyper-parameters whose default does not tell their type.
TRAINING_SPECS: dict[str, dict[str, Any]] = {
    "validation": {"type": ("str", "bool")},
    "devices": {"type": ("str", "int", "list")},
    "precision": {"type": ("str", "int", "null")},
    "checkpoint_dir": {"type": ("str", "null")},
}
#: Hyper-parameters that change how a model is trained, not what it is: not saved with the model.
_RUNTIME = ("accelerator", "devices", "strategy", "precision", "checkpoint_dir", "progress")


def validation_section(validation, n_sections: int, seed: int) -> int | None:
    """Index of the training section held out for early stopping, or ``None`` (never a split of spots)."""
    if validation not in ("auto", True, False):
        msg = f"`validation` must be 'auto', True or False, got {validation!r}."
        raise ValueError(msg)
    if validation is True and n_sections < 2:
        msg = (
            "`validation=True` needs at least two training sections (validation is by section, never by "
            "spot); pass more sections or `validation=False`."
        )
        raise ValueError(msg)
    if validation is False or n_sections < 2:
        return None
    return int(np.random.default_rng(seed).integers(n_sections))


def standardisation(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations (+1e-6) of the rows of ``arrays`` stacked, as float32.

    float32 is what the weights file stores: a model predicts the same before saving and after loading.
    """
    stacked = np.vstack(arrays)
    mean, std = stacked.mean(axis=0), stacked.std(axis=0) + 1e-6
    return mean.astype(np.float32), std.astype(np.float32)


def load_module(module, state: dict, *, prefix: str = "module.") -> None:
    """Load ``state`` into ``module`` (eval mode) once the name and shape of every tensor are checked."""
    check_shapes(state, {name: tuple(t.shape) for name, t in module.state_dict().items()}, prefix=prefix)
    module.load_state_dict(state, strict=True)
    module.eval()


class TorchPredictor(Predictor):
    """A predictor whose model is a ``torch.nn.Module`` on standardised features and targets.

    Features and targets are standardised with the means and standard deviations of the training spots
    (saved with the model). When ``validation`` is ``"auto"`` and there are at least two training
    sections, one of them (drawn with ``seed``) is the validation set for early stopping; ``True``
    requires that, ``False`` trains for ``max_epochs`` on everything.
    """

    defaults: ClassVar[dict[str, Any]] = dict(TRAINING_DEFAULTS)
    hparam_specs: ClassVar[dict[str, dict[str, Any]]] = dict(TRAINING_SPECS)

    # -- hooks --------------------------------------------------------------------------------------
    @abstractmethod
    def build_module(self, n_features: int, n_genes: int):
        """The untrained ``nn.Module``: standardised features -> ``{"expression": ..., ...}``."""

    def loss(self, outputs, batch):
        """Training loss on one batch ``(features, targets, *extra)``; mean squared error by default."""
        import torch.nn.functional as F

        return F.mse_loss(outputs["expression"], batch[1])

    def extra_targets(self, obs: pd.DataFrame) -> list[np.ndarray]:
        """Per-spot training targets besides expression (e.g. tumor labels), from a section's ``obs``."""
        return []

    def annotations(self, outputs) -> dict[str, np.ndarray]:
        """Per-spot outputs besides expression, written to ``obs`` by ``predict_expression``."""
        return {}

    def _matrix(self, inputs) -> np.ndarray:
        """The per-spot feature matrix (spots x d) of one section's inputs, which is standardised."""
        return inputs

    def _standardised(self, inputs) -> np.ndarray:
        """The feature matrix of one section's inputs, standardised with the training statistics."""
        return (self._matrix(inputs) - self._stats["x_mean"]) / self._stats["x_std"]

    def training_data(self, features, targets, extras, indices):
        """Training (or validation) data of the sections ``indices``, standardised with ``self._stats``:
        by default a tuple of tensors ``(x, y, *extra targets)`` with one row per spot."""
        import torch

        x = np.vstack([self._standardised(features[i]) for i in indices])
        y = np.vstack([(targets[i] - self._stats["y_mean"]) / self._stats["y_std"] for i in indices])
        columns = [np.concatenate([extras[i][k] for i in indices]) for k in range(len(extras[0]))]
        return tuple(torch.as_tensor(a, dtype=torch.float32) for a in (x, y, *columns))

    # -- fit / predict ------------------------------------------------------------------------------
    def _fit(self, features, targets, sections, obs) -> None:
        import torch

        from ._training import TrainingConfig, train

        held = validation_section(self.hparams["validation"], len(sections), self.seed)
        train_idx = [i for i in range(len(sections)) if i != held]
        x_mean, x_std = standardisation([self._matrix(features[i]) for i in train_idx])
        y_mean, y_std = standardisation([targets[i] for i in train_idx])
        self._stats = {"x_mean": x_mean, "x_std": x_std, "y_mean": y_mean, "y_std": y_std}
        extras = [self.extra_targets(o) for o in obs]

        def data(indices):
            return self.training_data(features, targets, extras, indices)

        torch.manual_seed(self.seed)
        self.module = self.build_module(self._matrix(features[0]).shape[1], targets[0].shape[1])
        config = TrainingConfig(
            **{k: self.hparams[k] for k in TRAINING_DEFAULTS if k != "validation"}, seed=self.seed
        )
        self.history = train(
            self.module, self.loss, data(train_idx), None if held is None else data([held]), config
        )
        if held is not None:
            self.history["validation_section"] = [sections[held]]

    def _predict(self, features: np.ndarray):
        import torch

        x = self._standardised(features)
        self.module.eval()
        with torch.inference_mode():
            outputs = self.module(torch.as_tensor(x, dtype=torch.float32))
        expression = outputs["expression"].numpy() * self._stats["y_std"] + self._stats["y_mean"]
        return expression, self.annotations(outputs)

    # -- tensors ------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        config = super().config()
        config["hparams"] = {k: v for k, v in self.hparams.items() if k not in _RUNTIME}
        config["n_features"] = int(self._stats["x_mean"].shape[0]) if self.is_fitted else None
        return config

    def _tensors(self):
        import torch

        stats = {f"stats.{k}": torch.as_tensor(v, dtype=torch.float32) for k, v in self._stats.items()}
        return {**stats, **{f"module.{k}": v for k, v in self.module.state_dict().items()}}

    def _n_inputs(self) -> int:
        """Width of the standardised matrix the module reads: the recorded input width by default."""
        return self._input_width()

    def _load_tensors(self, tensors) -> None:
        stats, state = split_tensors(tensors, ("stats.", "module."))
        n_inputs, n_genes = self._n_inputs(), len(self.genes)
        expected = {"x_mean": (n_inputs,), "x_std": (n_inputs,), "y_mean": (n_genes,), "y_std": (n_genes,)}
        check_shapes(stats, expected, prefix="stats.")
        self._stats = {k: v.numpy() for k, v in stats.items()}  # float32, as at fit
        self.module = self.build_module(n_inputs, n_genes)
        load_module(self.module, state)
