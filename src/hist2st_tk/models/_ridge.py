"""The ridge baseline: the HEST-benchmark recipe on frozen image features."""

from __future__ import annotations

import numpy as np

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


def fit_ridge(features: np.ndarray, targets: np.ndarray, *, n_comps: int = 256, seed: int = 0):
    """The ridge pipeline fitted on ``features`` (spots x d) to ``targets`` (spots x genes)."""
    n_comps = min(n_comps, features.shape[0], features.shape[1])
    return ridge_pipeline(n_comps=n_comps, seed=seed).fit(features, targets)
