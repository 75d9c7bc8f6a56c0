"""Tools: fit predictors, predict and evaluate expression, cross-validate under named protocols."""

from __future__ import annotations

from ._cross_validate import CrossValidation, cross_validate
from ._evaluate import evaluate
from ._predict import fit_predictor, predict_expression

__all__ = ["CrossValidation", "cross_validate", "evaluate", "fit_predictor", "predict_expression"]
