"""Agreement of predicted and measured expression, computed column- or row-wise without loops."""

from __future__ import annotations

import numpy as np


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
