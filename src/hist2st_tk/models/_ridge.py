"""The ridge baseline: the HEST-benchmark recipe on frozen image features."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd

from .._constants import TUMOR_SCORE_KEY
from ._base import Predictor, register_method
from ._schema import axis_length, check_shapes

#: Ridge penalties searched by leave-one-out cross-validation on the training spots.
RIDGE_ALPHAS = tuple(np.logspace(-1, 5, 13))


def ridge_pipeline(*, n_comps: int = 256, alphas=RIDGE_ALPHAS, seed: int = 0):
    """StandardScaler -> PCA(``n_comps``) -> RidgeCV, as a scikit-learn pipeline (unfitted).

    Every statistic (scaling, components, penalty) is learnt from the spots it is fitted on, so fitting
    it on training sections only leaks nothing from a held-out section. ``n_comps`` is clipped to what
    the training data allows when fitted through :func:`fit_ridge`.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(), PCA(n_components=n_comps, random_state=seed), RidgeCV(alphas=np.asarray(alphas))
    )


def fit_ridge(
    features: np.ndarray, targets: np.ndarray, *, n_comps: int = 256, alphas=RIDGE_ALPHAS, seed: int = 0
):
    """The ridge pipeline fitted on ``features`` (spots x d) to ``targets`` (spots x genes)."""
    n_comps = min(n_comps, features.shape[0], features.shape[1])
    return ridge_pipeline(n_comps=n_comps, alphas=alphas, seed=seed).fit(features, targets)


@register_method
class RidgePredictor(Predictor):
    """The ridge baseline: StandardScaler -> PCA -> RidgeCV on frozen image features (HEST-benchmark recipe).

    Hyper-parameters
    ----------------
    n_comps
        Number of principal components (clipped to what the training data allows).
    alphas
        Ridge penalties searched by efficient leave-one-out cross-validation on the training spots.
    label_key
        Boolean ``obs`` column of tumor labels; when the training spots have both classes, a logistic
        regression on the same principal components predicts ``tumor_score`` (the image-feature tumor
        baseline of docs/protocols.md).
    tumor_c
        Inverse regularisation strength of that logistic regression (scikit-learn's ``C``); strong
        regularisation transfers best across sections (her2st6-loso AUC 0.80 at 0.1, 0.84 at 0.001 on
        section-centred multi-scale + context lite0 features).
    tumor_signature
        ``{"positive": genes, "negative": genes}``: instead, the tumor head is a logistic regression on
        a marker signature of the model's own predictions (mean z-score over the section's spots of
        the positive panel genes minus that of the negative ones, as ``ht.tl.tumor_regions``), so that
        the tumor score follows the predicted markers and transfers like them.
    """

    method = "ridge"
    defaults: ClassVar[dict[str, Any]] = {
        "n_comps": 256,
        "alphas": [float(a) for a in RIDGE_ALPHAS],
        "label_key": "tumor",
        "tumor_c": 0.001,
        "tumor_signature": None,
    }
    hparam_specs: ClassVar[dict[str, dict[str, Any]]] = {
        "tumor_signature": {"type": ("dict", "null"), "values": {"type": "list", "items": {"type": "str"}}},
    }

    def _fit(self, features: list[np.ndarray], targets: list[np.ndarray], sections: list[str], obs) -> None:
        pipeline = fit_ridge(
            np.vstack(features),
            np.vstack(targets),
            n_comps=self.hparams["n_comps"],
            alphas=self.hparams["alphas"],
            seed=self.seed,
        )
        scaler, pca, ridge = (step for _, step in pipeline.steps)
        # Folded into one affine map: x -> ((x - mean) / scale - pca_mean) @ components.T @ coef.T + intercept
        self._arrays = {
            "scaler_mean": scaler.mean_,
            "scaler_scale": scaler.scale_,
            "pca_mean": pca.mean_,
            "pca_components": pca.components_,
            "coef": np.atleast_2d(ridge.coef_),
            "intercept": np.atleast_1d(ridge.intercept_),
        }
        if self.hparams["tumor_signature"]:
            self._fit_tumor_signature(features, obs)
        else:
            self._fit_tumor(pipeline[:-1].transform(np.vstack(features)), obs)
        # float32 halves the saved model and is exact enough for expression; fit and load predict alike
        self._arrays = {name: np.asarray(value, dtype=np.float32) for name, value in self._arrays.items()}
        self.history = {
            "alpha": [float(ridge.alpha_)],
            "pca_explained_variance": [float(pca.explained_variance_ratio_.sum())],
        }

    def _fit_tumor(self, scores: np.ndarray, obs) -> None:
        """A logistic regression for tumor on the principal components, when labels of both classes exist."""
        from sklearn.linear_model import LogisticRegression

        labels = self._tumor_labels(obs)
        if labels is None:
            return
        known = ~np.isnan(labels)
        classifier = LogisticRegression(C=self.hparams["tumor_c"], max_iter=2000).fit(scores[known], labels[known].astype(bool))
        self._arrays["tumor_coef"] = classifier.coef_.ravel()
        self._arrays["tumor_intercept"] = classifier.intercept_

    def _tumor_labels(self, obs) -> np.ndarray | None:
        """Tumor labels of the training spots as floats (NaN unknown), or ``None`` without both classes."""
        key = self.hparams["label_key"]
        if not all(key in o for o in obs):
            return None
        labels = pd.concat([o[key].astype("boolean") for o in obs]).to_numpy(dtype=float, na_value=np.nan)
        return labels if len(np.unique(labels[~np.isnan(labels)])) == 2 else None

    def _signature_genes(self) -> tuple[np.ndarray, np.ndarray]:
        """Panel positions of the signature's positive and negative genes that the model predicts."""
        signature = self.hparams["tumor_signature"]
        position = {gene: i for i, gene in enumerate(self.genes)}
        return tuple(
            np.array([position[g] for g in signature.get(side, ()) if g in position], dtype=np.int64)
            for side in ("positive", "negative")
        )

    def _signature(self, expression: np.ndarray) -> np.ndarray:
        """The marker signature of one section's predicted expression (z-scores over its spots)."""
        positive, negative = self._signature_genes()
        std = expression.std(axis=0)
        z = np.divide(expression - expression.mean(axis=0), std, out=np.zeros_like(expression), where=std > 0)
        score = z[:, positive].mean(axis=1)
        return score - z[:, negative].mean(axis=1) if len(negative) else score

    def _fit_tumor_signature(self, features: list[np.ndarray], obs) -> None:
        """A logistic regression for tumor on the marker signature of each training section's predictions."""
        from sklearn.linear_model import LogisticRegression

        labels = self._tumor_labels(obs)
        positive, _ = self._signature_genes()
        if labels is None or not len(positive):
            return
        scores = np.concatenate([self._signature(self._expression(f)) for f in features])[:, None]
        known = ~np.isnan(labels)
        classifier = LogisticRegression(max_iter=2000).fit(scores[known], labels[known].astype(bool))
        self._arrays["tumor_signature_coef"] = classifier.coef_.ravel()
        self._arrays["tumor_intercept"] = classifier.intercept_

    def _components(self, features: np.ndarray) -> np.ndarray:
        """Principal component scores of standardised features."""
        a = self._arrays
        return ((features - a["scaler_mean"]) / a["scaler_scale"] - a["pca_mean"]) @ a["pca_components"].T

    def _expression(self, features: np.ndarray) -> np.ndarray:
        return self._components(features) @ self._arrays["coef"].T + self._arrays["intercept"]

    def _predict(self, features: np.ndarray):
        a = self._arrays
        expected = a["scaler_mean"].shape[0]
        if features.shape[1] != expected:
            msg = f"The model reads {expected} features per spot, got {features.shape[1]}."
            raise ValueError(msg)
        scores = self._components(features)
        expression = scores @ a["coef"].T + a["intercept"]
        if "tumor_signature_coef" in a:
            logit = self._signature(expression) * a["tumor_signature_coef"][0] + a["tumor_intercept"][0]
        elif "tumor_coef" in a:
            logit = scores @ a["tumor_coef"] + a["tumor_intercept"][0]
        else:
            return expression
        return expression, {TUMOR_SCORE_KEY: 1 / (1 + np.exp(-logit))}

    def _tensors(self):
        import torch

        return {
            name: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
            for name, value in self._arrays.items()
        }

    def _load_tensors(self, tensors) -> None:
        n_features, n_genes = self._input_width(), len(self.genes)
        n_comps = axis_length(tensors, "pca_components", 0)  # clipped at fit: the file sets it
        expected = {
            "scaler_mean": (n_features,),
            "scaler_scale": (n_features,),
            "pca_mean": (n_features,),
            "pca_components": (n_comps, n_features),
            "coef": (n_genes, n_comps),
            "intercept": (n_genes,),
            "tumor_coef": (n_comps,),
            "tumor_signature_coef": (1,),
            "tumor_intercept": (1,),
        }
        check_shapes(tensors, expected, optional=("tumor_coef", "tumor_signature_coef", "tumor_intercept"))
        self._arrays = {name: tensors[name].numpy() for name in expected if name in tensors}
