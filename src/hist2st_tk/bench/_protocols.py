"""Evaluation protocols of DESIGN.md §6 and the reference numbers measured on the real data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._constants import TABLE_KEY
from .._metrics import pearson_columns
from .._sdata import get_table

if TYPE_CHECKING:
    from spatialdata import SpatialData

#: The six HER2ST sections with a full-resolution image: patient B (B4) and patient C (C2-C6).
HER2ST6: tuple[str, ...] = ("B4", "C2", "C3", "C4", "C5", "C6")

#: Reference mean Pearson per gene (DESIGN.md §6): frozen ImageNet lite0 features of 112 um patches,
#: StandardScaler + PCA(256) + RidgeCV, panels chosen on the training sections.
REFERENCE: dict[str, dict[str, float]] = {
    "her2st6-loso": {"top250mean": 0.177, "top50var": 0.229},
    "C->B4": {"top250mean": 0.138, "top50var": 0.121},
    "B4->C": {"top250mean": 0.070, "top50var": 0.082},
}

#: Gene panels of the protocols: name -> (statistic over the training spots, number of genes).
PANELS: dict[str, tuple[str, int]] = {"top250mean": ("mean", 250), "top50var": ("var", 50)}


def loso_folds(sections: Sequence[str] = HER2ST6) -> list[tuple[list[str], str]]:
    """Leave-one-section-out folds as ``(training sections, held-out section)``."""
    return [([s for s in sections if s != held_out], held_out) for held_out in sections]


def _expression(sdata: SpatialData, table_key: str) -> pd.DataFrame:
    table = get_table(sdata, table_key)
    return table.to_df()


def _panel(training: pd.DataFrame, statistic: str, n_genes: int) -> pd.Index:
    values = training.mean() if statistic == "mean" else training.var()
    order = values.sort_index().sort_values(ascending=False, kind="stable")
    return order.index[:n_genes]


def ridge_loso(
    sdatas: Mapping[str, SpatialData],
    *,
    use_rep: str = "X_lite0",
    folds: Sequence[tuple[Sequence[str], str]] | None = None,
    table_key: str = TABLE_KEY,
    seed: int = 0,
) -> pd.DataFrame:
    """The ridge recipe evaluated fold by fold: mean Pearson per gene on each held-out section.

    Genes are those shared by all sections passed; each panel (``top250mean``, ``top50var``) is chosen
    on the training sections of its fold. Returns a tidy frame with columns ``held_out``, ``panel``,
    ``pearson`` (mean over the panel's genes) and ``n_genes``.
    """
    from ..models._ridge import fit_ridge

    folds = loso_folds(list(sdatas)) if folds is None else folds
    expression = {name: _expression(sd, table_key) for name, sd in sdatas.items()}
    shared = sorted(set.intersection(*(set(frame.columns) for frame in expression.values())))
    features = {}
    for name, sd in sdatas.items():
        table = get_table(sd, table_key)
        if use_rep not in table.obsm:
            msg = f"Section {name!r} has no obsm[{use_rep!r}]; run `ht.pp.image_features` first."
            raise KeyError(msg)
        features[name] = np.asarray(table.obsm[use_rep])
    rows = []
    for training, held_out in folds:
        x_train = np.vstack([features[s] for s in training])
        y_train = pd.concat([expression[s][shared] for s in training])
        for panel, (statistic, n_genes) in PANELS.items():
            genes = _panel(y_train, statistic, n_genes)
            model = fit_ridge(x_train, y_train[genes].to_numpy(), seed=seed)
            predicted = model.predict(features[held_out])
            r = pearson_columns(predicted, expression[held_out][genes].to_numpy())
            rows.append(
                {"held_out": held_out, "panel": panel, "pearson": float(np.nanmean(r)), "n_genes": len(genes)}
            )
    return pd.DataFrame(rows)
