"""Tools: fit predictors, predict and evaluate expression, cross-validate under named protocols."""

from __future__ import annotations

from ._clusters import cluster_agreement
from ._cohort import predict_cohort
from ._compare import compare_regions
from ._cox import CoxResult, cox
from ._cross_validate import CrossValidation, cross_validate
from ._evaluate import evaluate
from ._patients import survival_table, write_survival_table
from ._predict import fit_predictor, predict_expression, warn_if_unsuitable
from ._slide import predict_slide
from ._tumor import TumorClassifier, fit_tumor_classifier, tumor_regions, tumor_score_auc

__all__ = [
    "CoxResult",
    "CrossValidation",
    "TumorClassifier",
    "cluster_agreement",
    "compare_regions",
    "cox",
    "cross_validate",
    "evaluate",
    "fit_predictor",
    "fit_tumor_classifier",
    "predict_cohort",
    "predict_expression",
    "predict_slide",
    "survival_table",
    "tumor_regions",
    "tumor_score_auc",
    "warn_if_unsuitable",
    "write_survival_table",
]
