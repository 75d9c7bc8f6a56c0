"""Agreement of predicted and measured expression (per gene, per spot) and of tumor scores with labels,
computed column- or row-wise without loops. The bottom of the package: tl and pl both score through it."""

from __future__ import annotations

import numpy as np
import pandas as pd


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

    if "tumor_score" not in annotations or label_key not in obs:
        return float("nan")
    labels = obs[label_key].astype("boolean")
    known = labels.notna().to_numpy()
    truth = labels[known].to_numpy(dtype=bool)
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, annotations["tumor_score"].to_numpy()[known]))
