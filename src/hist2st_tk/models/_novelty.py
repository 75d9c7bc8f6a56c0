"""How unlike the training spots a spot's image features are: a novelty score calibrated to mean something.

A predictor is trustworthy where its inputs look like what it was trained on. The score works in the
model's own feature space (the features it reads, before any centring per section, so that a slide
unlike the training ones as a whole stands out): features are
standardised with the training statistics and projected on the training sections' principal
components; a spot's distance is the mean squared distance to its ``k`` nearest training spots in
that projection plus its squared residual off the projection (what the components cannot express).

The distance alone has no unit. It is calibrated by leave-one-section-out on the training sections:
each training section is scored against a fit on the others, as a new section of the same kind would
be; the novelty of a spot is the fraction of those held-out distances below its own. So ``0.5`` is a
typical new section of the training domain, and above ``0.99`` (:data:`OOD_NOVELTY`) is further than
99% of them: out of distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

#: Principal components kept for the neighbour search.
N_COMPONENTS = 32
#: Training spots whose distances are averaged.
N_NEIGHBOURS = 10
#: Quantiles of the held-out distances stored for the calibration.
N_QUANTILES = 1001
#: A spot with a novelty above this lies further than 99% of held-out training spots.
OOD_NOVELTY = 0.99
#: At most this many training spots (a seeded random subset) are kept as neighbours to search.
MAX_REFERENCE = 5000
#: Tensor names of a saved novelty model (prefixed in the weights file).
PREFIX = "novelty."
_NAMES = ("mean", "scale", "components", "train_scores", "quantiles")


class FeatureNovelty:
    """The training distribution of a predictor's input features and the calibration of distances to it."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays

    # -- fitting ------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls, features: Sequence[np.ndarray], sections: Sequence[str], *, seed: int = 0
    ) -> FeatureNovelty | None:
        """Fit on per-section training features (spots x d) named by their sections; ``None`` with fewer
        than two distinct sections (there is no held-out section to calibrate on). Renderings of one
        section (training-time augmentation) share its name and are held out together."""
        names = list(dict.fromkeys(sections))
        if len(names) < 2:
            return None
        held_out = []
        for name in names:
            others = np.vstack([f for f, s in zip(features, sections, strict=True) if s != name])
            space = _space(others, seed=seed)
            held_out += [_distances(f, space) for f, s in zip(features, sections, strict=True) if s == name]
        arrays = _space(np.vstack(features), seed=seed)
        arrays["quantiles"] = np.quantile(np.concatenate(held_out), np.linspace(0, 1, N_QUANTILES))
        return cls({name: np.asarray(value, dtype=np.float32) for name, value in arrays.items()})

    # -- scoring ------------------------------------------------------------------------------------
    def score(self, features: np.ndarray) -> np.ndarray:
        """Novelty of each row of ``features`` (spots x d) in [0, 1]."""
        distances = _distances(features, self.arrays)
        quantiles = self.arrays["quantiles"].astype(np.float64)
        return np.interp(distances, quantiles, np.linspace(0, 1, len(quantiles)))

    @staticmethod
    def summary(novelty: np.ndarray) -> dict[str, float]:
        """Median novelty and the fraction of spots out of distribution, as plain floats."""
        return {
            "median": float(np.median(novelty)),
            "fraction_out_of_distribution": float(np.mean(novelty > OOD_NOVELTY)),
            "threshold": OOD_NOVELTY,
        }

    # -- files --------------------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """The arrays as named tensors for the model's weights file."""
        import torch

        return {PREFIX + name: torch.from_numpy(np.ascontiguousarray(self.arrays[name])) for name in _NAMES}

    @classmethod
    def pop_from(cls, tensors: dict[str, torch.Tensor], *, width: int | None = None) -> FeatureNovelty | None:
        """Take the novelty tensors out of a model's tensors (``None`` when the model has none), checking
        their names and, given the ``width`` of the features the model reads, their shapes."""
        from ._schema import axis_length, check_shapes

        names = [name for name in tensors if name.startswith(PREFIX)]
        if not names:
            return None
        found = {name[len(PREFIX) :]: tensors.pop(name) for name in names}
        n_comps = axis_length(found, "components", 0)
        expected = {
            "mean": (width,),
            "scale": (width,),
            "components": (n_comps, width),
            "train_scores": (None, n_comps),
            "quantiles": (None,),
        }
        check_shapes(found, expected, prefix=PREFIX)
        return cls({name: tensor.numpy() for name, tensor in found.items()})


def _space(features: np.ndarray, *, seed: int) -> dict[str, np.ndarray]:
    """Standardisation and principal components of ``features``, and the training spots' scores."""
    from sklearn.decomposition import PCA

    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale == 0] = 1.0
    standardised = (features - mean) / scale
    n_comps = min(N_COMPONENTS, *standardised.shape)
    pca = PCA(n_components=n_comps, svd_solver="randomized", random_state=seed).fit(standardised)
    if len(standardised) > MAX_REFERENCE:
        keep = np.random.default_rng(seed).choice(len(standardised), MAX_REFERENCE, replace=False)
        standardised = standardised[np.sort(keep)]
    return {
        "mean": mean,
        "scale": scale,
        "components": pca.components_,  # PCA's own mean of standardised features is 0
        "train_scores": standardised @ pca.components_.T,
    }


def _distances(features: np.ndarray, space: dict[str, np.ndarray], *, chunk: int = 1024) -> np.ndarray:
    """Mean squared distance to the nearest training spots in the projection plus the squared
    residual off it, per row, as a root mean square per feature dimension."""
    mean, scale = space["mean"].astype(np.float64), space["scale"].astype(np.float64)
    components = space["components"].astype(np.float64)
    train = space["train_scores"].astype(np.float64)
    k = min(N_NEIGHBOURS, len(train))
    train_sq = (train**2).sum(axis=1)
    out = np.empty(len(features))
    for start in range(0, len(features), chunk):
        x = (np.asarray(features[start : start + chunk], dtype=np.float64) - mean) / scale
        scores = x @ components.T
        residual = (x**2).sum(axis=1) - (scores**2).sum(axis=1)
        squared = np.maximum((scores**2).sum(axis=1)[:, None] + train_sq[None, :] - 2 * scores @ train.T, 0)
        nearest = np.partition(squared, k - 1, axis=1)[:, :k].mean(axis=1)
        out[start : start + chunk] = np.sqrt((nearest + np.maximum(residual, 0)) / x.shape[1])
    return out
