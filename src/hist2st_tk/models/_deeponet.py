"""``deeponet``: the dual-modality operator model, a DeepONet whose branch reads image features and whose trunk
reads the gene (and optionally the spot position), with a classification head."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from .._constants import TABLE_KEY
from .._docs import doc_params
from .._logging import format_ids, logger
from ._base import register_method
from ._schema import axis_length, check_shapes
from ._torch import TRAINING_DEFAULTS, TRAINING_SPECS, TorchPredictor, validation_section


@dataclass
class OperatorInputs:
    """One section's input: the concatenated ``use_rep`` features and the Fourier features of the positions
    (spots x 0 when the trunk does not read the location)."""

    features: np.ndarray
    position: np.ndarray

    def __len__(self) -> int:
        return len(self.features)


class _Spots:
    """Standardised reduced features, positions, targets and labels; one spot per item."""

    def __init__(self, x, position, y, labels, known):
        self.x, self.position, self.y, self.labels, self.known = x, position, y, labels, known

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        import torch

        inputs = {
            "x": torch.as_tensor(self.x[i], dtype=torch.float32),
            "position": torch.as_tensor(self.position[i], dtype=torch.float32),
        }
        return (
            inputs,
            torch.as_tensor(self.y[i], dtype=torch.float32),
            torch.as_tensor(self.labels[i]),
            torch.as_tensor(self.known[i]),
        )


@register_method
class DeepONetPredictor(TorchPredictor):
    """Dual-modality DeepONet: image features in the branch net, the gene (and optionally the location) in the
    trunk net, plus a classification head.

    Each ``use_rep`` key (e.g. ``["X_lite0", "X_fft"]``: EfficientNet-Lite0 features and the patches' Fourier
    band energies from :func:`hist2st_tk.pp.fourier_features`) is reduced on its own by an incremental PCA
    fitted on the training spots (``n_components`` each; saved with the model), and the reduced modalities
    are concatenated and standardised. The branch net maps them to ``basis`` coefficients; the trunk net maps
    a learnt embedding of each gene (with ``trunk_location=True``, also random Fourier features of the spot
    position in microns) to ``basis`` functions; the prediction is their inner product plus a per-gene bias.
    The trunk knows the training genes only (:meth:`predict_genes` predicts any subset of them). A
    classification head on the branch's hidden layer predicts ``obs[label_key]`` (any categorical column;
    HER2ST's ``"tumor"`` by default), trained with cross-entropy on labelled spots (weight ``class_weight``);
    its accuracy and macro precision on the validation section are in ``history``. For a two-class label the
    probability of the second class (``True`` for booleans) is written as ``obs[f"{label_key}_score"]``,
    otherwise the predicted class as ``obs[f"{label_key}_predicted"]``.

    Hyper-parameters
    ----------------
    n_components
        Components of each modality's incremental PCA (clipped to its width and the training spots).
    hidden, basis, gene_dim, dropout
        Width of the branch and trunk hidden layers, number of basis functions, gene embedding size, dropout.
    trunk_location, location_features, location_scale_um
        Feed the position to the trunk; its number of random Fourier frequencies and their length scale.
    label_key, class_weight, classes
        Label column of the classification head, weight of its loss, and its classes (set at fit).
    """

    method = "deeponet"
    defaults: ClassVar[dict[str, Any]] = {
        **TRAINING_DEFAULTS,
        "n_components": 64,
        "hidden": 256,
        "basis": 64,
        "gene_dim": 32,
        "dropout": 0.2,
        "trunk_location": False,
        "location_features": 16,
        "location_scale_um": 1000.0,
        "label_key": "tumor",
        "class_weight": 0.5,
        "classes": None,
    }
    hparam_specs: ClassVar[dict[str, dict[str, Any]]] = {
        **TRAINING_SPECS,
        "classes": {"type": ("list", "null"), "items": {"type": "str"}},
    }

    # -- inputs --------------------------------------------------------------------------------------
    def _section_inputs(self, sdata, table, table_key: str, *, recorded: dict) -> OperatorInputs:
        features = self._features(table, table_key, recorded=recorded)
        if not self.hparams["trunk_location"]:
            return OperatorInputs(features, np.zeros((len(features), 0), dtype=np.float32))
        from .._scale import get_mpp
        from .._sdata import section_image_key
        from .._section import spatial_coords
        from ..pp._fourier import random_fourier_features

        microns = spatial_coords(table, table_key) * get_mpp(sdata, section_image_key(sdata, table))[0]
        position = random_fourier_features(
            microns,
            n_features=self.hparams["location_features"],
            scale_um=self.hparams["location_scale_um"],
            seed=self.seed,
        )
        return OperatorInputs(features, position)

    def _matrix(self, inputs: OperatorInputs) -> np.ndarray:
        """The modalities, each projected on its principal components, side by side."""
        parts, start = [], 0
        for mean, components in self._pca:
            stop = start + len(mean)
            parts.append((inputs.features[:, start:stop] - mean) @ components.T)
            start = stop
        return np.hstack(parts).astype(np.float32)

    def _widths(self) -> list[int]:
        return [int(self.inputs[key]["dim"]) for key in self.use_rep]

    # -- labels of the classification head ------------------------------------------------------------
    def extra_targets(self, obs: pd.DataFrame) -> list[np.ndarray]:
        key, classes = self.hparams["label_key"], self.hparams["classes"] or []
        if key not in obs or not classes:
            return [np.zeros(len(obs), np.int64), np.zeros(len(obs), bool)]
        values = obs[key].astype(object)
        known = values.notna().to_numpy()
        codes = pd.Categorical(values.where(values.isna(), values.astype(str)), categories=classes).codes
        known &= codes >= 0
        return [np.where(known, codes, 0).astype(np.int64), known]

    @staticmethod
    def _classes(obs: list[pd.DataFrame], key: str) -> list[str]:
        values = [o[key].dropna().astype(str) for o in obs if key in o]
        return sorted(set().union(*[set(v) for v in values])) if values else []

    # -- fit --------------------------------------------------------------------------------------------
    def _fit(self, features, targets, sections, obs) -> None:
        from ..pp._ipca import fit_incremental_pca

        held = validation_section(self.hparams["validation"], len(sections), self.seed)
        fit_on = [f for i, f in enumerate(features) if i != held]
        self._pca, start = [], 0
        for width in self._widths():  # one PCA per modality, on the training spots only
            block = [f.features[:, start : start + width] for f in fit_on]
            model = fit_incremental_pca(
                block, n_comps=self.hparams["n_components"], n_features=width, batch_size=1024, whiten=False
            )
            self._pca.append((model.mean_.astype(np.float32), model.components_.astype(np.float32)))
            start += width
        classes = self._classes(obs, self.hparams["label_key"])
        self.hparams["classes"] = classes if len(classes) >= 2 else None
        super()._fit(features, targets, sections, obs)
        if held is not None and self.hparams["classes"]:
            self.history.update(self._classification_scores(features[held], obs[held]))

    def training_data(self, features, targets, extras, indices):
        return _Spots(
            np.vstack([self._standardised(features[i]) for i in indices]),
            np.vstack([features[i].position for i in indices]),
            np.vstack([self._standardised_targets(targets[i]) for i in indices]),
            np.concatenate([extras[i][0] for i in indices]),
            np.concatenate([extras[i][1] for i in indices]),
        )

    def build_module(self, n_features: int, n_genes: int):
        from ..nn import DeepONet

        return DeepONet(
            n_features,
            n_genes,
            hidden=self.hparams["hidden"],
            basis=self.hparams["basis"],
            gene_dim=self.hparams["gene_dim"],
            position_dim=2 * self.hparams["location_features"] if self.hparams["trunk_location"] else 0,
            n_classes=len(self.hparams["classes"] or []),
            dropout=self.hparams["dropout"],
        )

    def loss(self, outputs, batch):
        import torch.nn.functional as F

        _, targets, labels, known = batch
        loss = F.mse_loss(outputs["expression"], targets)
        if self.hparams["classes"] and known.any():
            classified = F.cross_entropy(outputs["logits"][known], labels[known])
            loss = loss + self.hparams["class_weight"] * classified
        return loss

    def _classification_scores(self, inputs: OperatorInputs, obs: pd.DataFrame) -> dict[str, list[float]]:
        """Accuracy and macro precision of the classification head on one section's labelled spots."""
        from sklearn.metrics import accuracy_score, precision_score

        labels, known = self.extra_targets(obs)
        if not known.any():
            return {}
        predicted = self._outputs(inputs)["logits"].argmax(axis=1)
        truth, guess = labels[known], predicted[known]
        scores = {
            "classification_accuracy": [float(accuracy_score(truth, guess))],
            "classification_precision": [
                float(precision_score(truth, guess, average="macro", zero_division=0))
            ],
        }
        logger.info("deeponet classification head on the validation section: %s", scores)
        return scores

    # -- predict ----------------------------------------------------------------------------------------
    def _outputs(self, inputs: OperatorInputs, genes=None) -> dict[str, np.ndarray]:
        import torch

        batch = {
            "x": torch.as_tensor(self._standardised(inputs), dtype=torch.float32),
            "position": torch.as_tensor(inputs.position, dtype=torch.float32),
        }
        self.module.eval()
        with torch.inference_mode():
            outputs = self.module(batch, None if genes is None else torch.as_tensor(genes))
        return {k: v.numpy() for k, v in outputs.items()}

    def _predict(self, features: OperatorInputs):
        outputs = self._outputs(features)
        expression = outputs["expression"] * self._stats["y_std"] + self._stats["y_mean"]
        return expression, self.annotations(outputs)

    def annotations(self, outputs) -> dict[str, np.ndarray]:
        classes, key = self.hparams["classes"], self.hparams["label_key"]
        if not classes:
            return {}
        logits = outputs["logits"]
        if len(classes) == 2:
            probability = np.exp(logits - logits.max(axis=1, keepdims=True))
            return {f"{key}_score": probability[:, 1] / probability.sum(axis=1)}
        return {f"{key}_predicted": np.asarray(classes, dtype=object)[logits.argmax(axis=1)]}

    @doc_params
    def predict_genes(self, sdata, *, genes: Sequence[str], table_key: str = TABLE_KEY) -> pd.DataFrame:
        """Predicted log-normalised expression of some of the training genes only (the trunk evaluated on
        them alone), spots x ``genes``. Writes nothing.

        Parameters
        ----------
        sdata
            The section, with the features the model reads.
        genes
            Genes of the training panel (``model.genes``); the trunk knows no others.
        {table_key}
        """
        from .._sdata import get_table

        if not self.is_fitted:
            msg = "This 'deeponet' predictor is not fitted; call `fit` or `load` first."
            raise ValueError(msg)
        genes = pd.Index([str(g) for g in genes])
        unknown = genes.difference(self.genes)
        if len(unknown) or genes.empty:
            msg = (
                f"The DeepONet trunk knows only the {len(self.genes)} genes it was trained on; "
                f"not in training: {format_ids(unknown) if len(unknown) else '(no genes asked)'}."
            )
            raise KeyError(msg)
        table = get_table(sdata, table_key)
        inputs = self._section_inputs(sdata, table, table_key, recorded=self.inputs)
        index = self.genes.get_indexer(genes)
        predicted = self._outputs(inputs, index)["expression"]
        predicted = predicted * self._stats["y_std"][index] + self._stats["y_mean"][index]
        return pd.DataFrame(predicted.astype(np.float32), index=table.obs_names.copy(), columns=genes)

    # -- tensors: the module, the standardisation and the PCA of each modality --------------------------
    def _tensors(self):
        import torch

        pca = {}
        for i, (mean, components) in enumerate(self._pca):
            pca[f"pca.{i}.mean"] = torch.as_tensor(mean)
            pca[f"pca.{i}.components"] = torch.as_tensor(components)
        return {**super()._tensors(), **pca}

    def _load_tensors(self, tensors) -> None:
        pca = {k[len("pca.") :]: v for k, v in tensors.items() if k.startswith("pca.")}
        expected = {}
        for i, width in enumerate(self._widths()):  # components: as many as the fit kept (at most width)
            expected[f"{i}.mean"] = (width,)
            expected[f"{i}.components"] = (axis_length(pca, f"{i}.components", 0), width)
        check_shapes(pca, expected, prefix="pca.")
        n_modalities = len(self.use_rep)
        self._pca = [(pca[f"{i}.mean"].numpy(), pca[f"{i}.components"].numpy()) for i in range(n_modalities)]
        super()._load_tensors({k: v for k, v in tensors.items() if not k.startswith("pca.")})

    def _n_inputs(self) -> int:
        return sum(len(components) for _, components in self._pca)
