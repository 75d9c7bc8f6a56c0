"""Agreement of predicted and measured expression (per gene, per spot) and of tumor scores with labels,
computed column- or row-wise without loops. The bottom of the package: tl and pl both score through it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ._constants import TUMOR_SCORE_KEY


def pearson_columns(predicted: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column (gene) of ``predicted`` with the same column of ``observed``.

    NaN where either column is constant (the correlation is undefined there).
    """
    p = np.asarray(predicted, dtype=np.float64)
    o = np.asarray(observed, dtype=np.float64)
    if p.shape != o.shape:
        msg = f"Predicted and observed must have the same shape, got {p.shape} and {o.shape}."
        raise ValueError(msg)
    p = p - p.mean(axis=0)
    o = o - o.mean(axis=0)
    denominator = np.sqrt((p * p).sum(axis=0) * (o * o).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (p * o).sum(axis=0) / denominator, np.nan)


#: Per-gene metrics written to ``var["{key}_{metric}"]``.
GENE_METRICS: tuple[str, ...] = ("pearson", "spearman", "mae", "mse", "r2")


def gene_scores(predicted: np.ndarray, observed: np.ndarray) -> pd.DataFrame:
    """Per-gene Pearson, Spearman, MAE, MSE and R² of two spots x genes arrays (columns = metrics)."""
    from scipy.stats import rankdata

    residual = predicted - observed
    mse = (residual**2).mean(axis=0)
    variance = observed.var(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(variance > 0, 1 - mse / variance, np.nan)
    return pd.DataFrame(
        {
            "pearson": pearson_columns(predicted, observed),
            "spearman": pearson_columns(rankdata(predicted, axis=0), rankdata(observed, axis=0)),
            "mae": np.abs(residual).mean(axis=0),
            "mse": mse,
            "r2": r2,
        }
    )


def spot_pearson(predicted: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Pearson correlation across the genes of each spot."""
    return pearson_columns(predicted.T, observed.T)


def tumor_auc(obs: pd.DataFrame, annotations: pd.DataFrame, label_key: str = "tumor") -> float:
    """AUC of ``annotations["tumor_score"]`` against the boolean ``obs[label_key]`` (NaN without both classes)."""
    from sklearn.metrics import roc_auc_score

    if TUMOR_SCORE_KEY not in annotations or label_key not in obs:
        return float("nan")
    labels = obs[label_key].astype("boolean")
    known = labels.notna().to_numpy()
    truth = labels[known].to_numpy(dtype=bool)
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, annotations[TUMOR_SCORE_KEY].to_numpy()[known]))


def score_expression(
    predicted: pd.DataFrame, table, genes: Sequence[str] | None = None, *, table_key: str = "table"
) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-gene and per-spot agreement of ``predicted`` (spots x genes) with the measured ``X`` of ``table``.

    The one scoring path of :func:`hist2st_tk.tl.evaluate` and :func:`hist2st_tk.tl.cross_validate`.
    Genes of ``genes`` (default: every predicted gene) that the table does not measure cannot be scored:
    they are left out, with a warning naming them. Genes that were not predicted are an error.

    Returns
    -------
    ``per_gene`` (scored genes x :data:`GENE_METRICS`) and ``per_spot`` (Pearson across the scored genes
    of each spot).
    """
    from ._logging import format_ids, logger

    wanted = pd.Index(predicted.columns if genes is None else genes)
    not_predicted = wanted.difference(predicted.columns)
    if len(not_predicted):
        msg = f"{len(not_predicted)} genes were not predicted: {format_ids(not_predicted)}."
        raise KeyError(msg)
    scored = wanted.intersection(table.var_names, sort=False)
    if scored.empty:
        msg = f"None of the {len(wanted)} genes to score is measured in table {table_key!r}."
        raise ValueError(msg)
    if len(scored) < len(wanted):
        unmeasured = wanted.difference(table.var_names)
        logger.warning(
            "%d of %d genes are not measured in table %r and are not scored: %s",
            len(unmeasured),
            len(wanted),
            table_key,
            format_ids(unmeasured),
        )
    observed = table[:, scored].X
    observed = np.asarray(observed.toarray() if hasattr(observed, "toarray") else observed, dtype=np.float64)
    values = predicted[scored].to_numpy(dtype=np.float64)
    return gene_scores(values, observed).set_axis(scored), spot_pearson(values, observed)
