"""Base of the neural predictors: standardisation, a validation section, Lightning training, tensors on disk."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from .._logging import logger
from ._base import Predictor
from ._schema import check_shapes, split_tensors

#: Hyper-parameters every neural predictor takes (see :class:`~hist2st_tk.nn._training.TrainingConfig`).
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
    """A predictor whose model is a ``torch.nn.Module`` (a network of :mod:`hist2st_tk.nn`) on
    standardised features and targets, trained by the Lightning plan of :mod:`~hist2st_tk.nn._training`.

    Features and targets are standardised with the means and standard deviations of the training spots
    (saved with the model). When ``validation`` is ``"auto"`` and there are at least two training
    sections, one of them (drawn with ``seed``) is the validation set for early stopping; ``True``
    requires that, ``False`` trains for ``max_epochs`` on everything.

    A method overrides :meth:`build_module` and, as needed, the other hooks: the loss, the training
    dataset (:meth:`training_data`), the prediction batches (:meth:`prediction_batches`), extra targets
    and per-spot annotations. Fitting, prediction, saving and loading are shared.
    """

    defaults: ClassVar[dict[str, Any]] = dict(TRAINING_DEFAULTS)
    hparam_specs: ClassVar[dict[str, dict[str, Any]]] = dict(TRAINING_SPECS)
    #: Whether the module reads a standardised feature matrix (``x_mean`` and ``x_std`` are then saved);
    #: ``False`` for a module that reads the image itself (ST-Net): only the targets are standardised.
    standardise_features: ClassVar[bool] = True

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

    def _standardised_targets(self, targets: np.ndarray) -> np.ndarray:
        """One section's targets (spots x genes), standardised with the training statistics."""
        return (targets - self._stats["y_mean"]) / self._stats["y_std"]

    def training_data(self, features, targets, extras, indices):
        """Training (or validation) data of the sections ``indices``, standardised with ``self._stats``:
        by default a tuple of tensors ``(x, y, *extra targets)`` with one row per spot."""
        import torch

        x = np.vstack([self._standardised(features[i]) for i in indices])
        y = np.vstack([self._standardised_targets(targets[i]) for i in indices])
        columns = [np.concatenate([extras[i][k] for i in indices]) for k in range(len(extras[0]))]
        return tuple(torch.as_tensor(a, dtype=torch.float32) for a in (x, y, *columns))

    def prediction_batches(self, inputs):
        """The module's inputs for one section, batch by batch: by default one batch of every spot."""
        import torch

        return [torch.as_tensor(self._standardised(inputs), dtype=torch.float32)]

    def augmentation(self):
        """A transform of the inputs of each training batch (e.g. flips of patches), or ``None``."""
        return None

    # -- fit / predict ------------------------------------------------------------------------------
    def _statistics(self, features, targets, indices) -> dict[str, np.ndarray]:
        """Means and standard deviations of the training spots' targets, and features when standardised."""
        y_mean, y_std = standardisation([targets[i] for i in indices])
        if not self.standardise_features:
            return {"y_mean": y_mean, "y_std": y_std}
        x_mean, x_std = standardisation([self._matrix(features[i]) for i in indices])
        return {"x_mean": x_mean, "x_std": x_std, "y_mean": y_mean, "y_std": y_std}

    def _training_config(self):
        """The settings of the Lightning run, from the hyper-parameters and the seed."""
        from ..nn._training import TrainingConfig

        settings = {k: self.hparams[k] for k in TRAINING_DEFAULTS if k != "validation"}
        return TrainingConfig(**settings, seed=self.seed, num_workers=self.hparams.get("num_workers", 0))

    def _fit(self, features, targets, sections, obs) -> None:
        import torch

        from ..nn._training import train

        held = validation_section(self.hparams["validation"], len(sections), self.seed)
        train_idx = [i for i in range(len(sections)) if i != held]
        self._stats = self._statistics(features, targets, train_idx)
        extras = [self.extra_targets(o) for o in obs]

        def data(indices):
            return self.training_data(features, targets, extras, indices)

        torch.manual_seed(self.seed)  # the initial weights
        n_inputs = len(self._stats["x_mean"]) if self.standardise_features else 0
        self.module = self.build_module(n_inputs, targets[0].shape[1])
        n_spots = sum(len(features[i]) for i in train_idx)
        logger.info("training %s on %d spots of %s", self.method, n_spots, [sections[i] for i in train_idx])
        train_data, val_data = data(train_idx), None if held is None else data([held])
        self.history = train(
            self.module, self.loss, train_data, val_data, self._training_config(), augment=self.augmentation()
        )
        if held is not None:
            self.history["validation_section"] = [sections[held]]

    def _module_outputs(self, inputs) -> dict:
        """The module's outputs (tensors) for one section's inputs, in eval mode, batches concatenated."""
        import torch

        self.module.eval()
        with torch.inference_mode():
            parts = [self.module(batch) for batch in self.prediction_batches(inputs)]
        if len(parts) == 1:
            return parts[0]
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}

    def _predict(self, features):
        outputs = self._module_outputs(features)
        expression = outputs["expression"].numpy() * self._stats["y_std"] + self._stats["y_mean"]
        return expression, self.annotations(outputs)

    # -- tensors ------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        config = super().config()
        config["hparams"] = {k: v for k, v in self.hparams.items() if k not in _RUNTIME}
        if self.standardise_features:
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
        expected = {"y_mean": (n_genes,), "y_std": (n_genes,)}
        if self.standardise_features:
            expected = {"x_mean": (n_inputs,), "x_std": (n_inputs,), **expected}
        check_shapes(stats, expected, prefix="stats.")
        self._stats = {k: v.numpy() for k, v in stats.items()}  # float32, as at fit
        self.module = self.build_module(n_inputs, n_genes)
        load_module(self.module, state)
