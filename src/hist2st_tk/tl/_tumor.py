"""Tumor regions from predicted expression: a marker signature or a classifier scores each spot, a
threshold calls the regions, and an AUC scores them against labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import TABLE_KEY, TUMOR_SCORE_KEY
from .._docs import doc_params
from .._logging import format_ids, log_added, logger
from .._markers import NON_TUMOR_MARKERS, TUMOR_MARKERS
from .._metrics import tumor_auc
from .._sdata import common_genes, named_sections, predictions
from .._section import check_section

if TYPE_CHECKING:
    from spatialdata import SpatialData

UNS_KEY = "tumor_regions"


def _zscore(values: np.ndarray) -> np.ndarray:
    """Columns centred and scaled to unit variance; constant columns become NaN (they carry no signal)."""
    std = values.std(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(std > 0, (values - values.mean(axis=0)) / std, np.nan)


def signature_score(
    frame: pd.DataFrame, positive: Sequence[str], negative: Sequence[str] = ()
) -> tuple[np.ndarray, dict[str, list[str]]]:
    """Per spot: mean z-score of the ``positive`` genes minus that of the ``negative`` genes.

    Genes missing from ``frame`` or constant over its spots are skipped. Returns the score and the genes
    ``used`` / ``skipped``; raises when no positive gene is usable.
    """
    z = pd.DataFrame(_zscore(frame.to_numpy(dtype=np.float64)), index=frame.index, columns=frame.columns)
    usable = set(z.columns[z.notna().all(axis=0)])
    pos = [g for g in positive if g in usable]
    neg = [g for g in negative if g in usable]
    skipped = [g for g in (*positive, *negative) if g not in usable]
    if not pos:
        msg = (
            f"None of the signature's positive genes is predicted (or varies) here: {format_ids(positive)}; "
            f"predicted genes e.g. {format_ids(frame.columns)}. Pass `signature=` or a classifier `model=`."
        )
        raise ValueError(msg)
    score = z[pos].mean(axis=1).to_numpy()
    if neg:
        score = score - z[neg].mean(axis=1).to_numpy()
    return score, {"used_positive": pos, "used_negative": neg, "skipped": skipped}


@dataclass
class TumorClassifier:
    """A logistic regression of tumor labels on standardised predicted expression (see :func:`fit_tumor_classifier`).

    Attributes
    ----------
    genes
        The predicted genes it reads, in order; any section predicting them can be scored.
    pipeline
        The fitted scikit-learn ``StandardScaler`` + ``LogisticRegression``.
    trained_on
        Names of the training sections.
    label_key
        The ``obs`` column of labels it was fitted on.
    """

    genes: list[str]
    pipeline: Any = field(repr=False)
    trained_on: list[str]
    label_key: str

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Probability of tumor of each row of a spots x genes DataFrame of predicted expression."""
        missing = pd.Index(self.genes).difference(frame.columns)
        if len(missing):
            msg = (
                f"The classifier reads {len(self.genes)} genes; {len(missing)} are not predicted here: "
                f"{format_ids(missing)}. Predict with a model of the same gene panel."
            )
            raise KeyError(msg)
        return self.pipeline.predict_proba(frame[self.genes].to_numpy(dtype=np.float64))[:, 1]


@doc_params
def fit_tumor_classifier(
    sdatas: SpatialData | Mapping[str, SpatialData] | Sequence[SpatialData],
    *,
    key: str | None = None,
    label_key: str = "tumor",
    genes: Sequence[str] | None = None,
    table_key: str = TABLE_KEY,
) -> TumorClassifier:
    """Fit a classifier of tumor spots from predicted expression on labelled training sections.

    A logistic regression (L2, ``C=1``, balanced class weights) on the predicted genes common to all
    sections, each standardised with the mean and variance over the training spots.

    Parameters
    ----------
    sdatas
        Training section(s) with predictions and labels: one SpatialData, a list, or a dict name -> SpatialData.
    key
        The predictions, ``obsm[key]``; default: each table's only ``predicted_*`` key.
    label_key
        Boolean ``obs`` column of labels (e.g. HER2ST's ``obs["tumor"]``); spots with a missing label are left out.
    genes
        Predicted genes to read, e.g. those also predicted in the sections to score; default: every gene
        predicted in all training sections.
    {table_key}

    Returns
    -------
    The fitted :class:`TumorClassifier`, for :func:`tumor_regions` ``(model=...)``; writes nothing.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    sections = named_sections(sdatas, table_key)
    frames, labels = [], []
    for name, sd in sections.items():
        table = check_section(sd, table_key)
        _, frame = predictions(table, key, table_key)
        known = _labels(table.obs, label_key, name)
        frames.append(frame.loc[known.index])
        labels.append(known)
    genes = common_genes(frames, genes, of="training sections")
    y = pd.concat(labels).to_numpy(dtype=bool)
    if y.all() or not y.any():
        msg = f"obs[{label_key!r}] of the training sections holds one class only; both are needed."
        raise ValueError(msg)
    x = np.vstack([f[genes].to_numpy(dtype=np.float64) for f in frames])
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000))
    pipeline.fit(x, y)
    return TumorClassifier(genes=genes, pipeline=pipeline, trained_on=list(sections), label_key=label_key)


def _labels(obs: pd.DataFrame, label_key: str, name: str) -> pd.Series:
    """The known (non-missing) boolean labels of ``obs[label_key]``."""
    if label_key not in obs:
        msg = f"Section {name!r} has no label column obs[{label_key!r}]; obs columns: {list(obs.columns)}."
        raise KeyError(msg)
    try:
        labels = obs[label_key].astype("boolean")
    except (TypeError, ValueError):
        msg = f"obs[{label_key!r}] of section {name!r} must be boolean (True = tumor), got {obs[label_key].dtype}."
        raise TypeError(msg) from None
    return labels[labels.notna()].astype(bool)


@doc_params
def tumor_regions(
    sdata: SpatialData,
    *,
    key: str | None = None,
    model: TumorClassifier | None = None,
    signature: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
    threshold: float = 0.5,
    key_added: str = "tumor",
    table_key: str = TABLE_KEY,
) -> pd.Series:
    """Score every spot for tumor from its predicted expression and call tumor regions.

    With a classifier ``model`` (:func:`fit_tumor_classifier`) the score is its probability of tumor.
    Without, it is a marker signature: the mean z-score (over the section's spots) of the predicted
    tumor markers minus that of the non-tumor markers, mapped to [0, 1] by the logistic function, so
    0.5 means the balance of the section's average spot. The default markers, chosen for HER2-positive
    breast cancer, are :data:`TUMOR_MARKERS` (HER2 amplicon ERBB2, GRB7, STARD3, PGAP3; luminal keratins
    KRT7, KRT8, KRT18, KRT19; EPCAM, CDH1, CLDN4, MUC1: carcinoma cells are epithelial) and
    :data:`NON_TUMOR_MARKERS` (collagens COL1A1, COL1A2, COL3A1, DCN, LUM of stroma; PTPRC, IGKC, IGHG3,
    IGLC2 of immune and plasma cells; ADIPOQ, PLIN1, FABP4 of fat). Markers that are not predicted (or
    constant) are skipped and logged.

    Parameters
    ----------
    sdata
        A section with predictions from :func:`predict_expression`.
    key
        The predictions, ``obsm[key]``; default: the table's only ``predicted_*`` key.
    model
        A fitted :class:`TumorClassifier`; it needs the genes it was trained on among the predictions.
    signature
        Markers instead of the defaults: a list of tumor genes, or ``{"positive": [...], "negative": [...]}``.
        Ignored when ``model`` is given.
    threshold
        Spots with a score at least this are called tumor.
    key_added
        Writes ``obs[f"{key_added}_score"]`` and ``obs[key_added]``; change it to keep labels already in
        ``obs["tumor"]`` (HER2ST's) for :func:`tumor_auc`.
    {table_key}

    Returns
    -------
    The score per spot (index = ``obs_names``). Writes:

    - ``obs[f"{key_added}_score"]`` (default ``obs["tumor_score"]``): float in [0, 1] (replacing one a
      predictor wrote, which is logged);
    - ``obs[key_added]`` (default ``obs["tumor"]``): bool, score >= ``threshold``;
    - ``uns["tumor_regions"]["params"]``: ``key``, ``method`` (``"classifier"`` or ``"signature"``),
      ``threshold``, ``genes`` read, and for a signature the markers ``skipped``; for a classifier ``trained_on``.

    Examples
    --------
    >>> import hist2st_tk as ht
    >>> sdata = ht.datasets.synthetic(n_spots=16, n_genes=4)
    >>> table = sdata["table"]
    >>> table.obsm["predicted_x"] = table.to_df()
    >>> score = ht.tl.tumor_regions(sdata, signature=["gene_000"])
    >>> bool(((score >= 0) & (score <= 1)).all())
    True
    """
    table = check_section(sdata, table_key)
    key, frame = predictions(table, key, table_key)
    if not 0 <= threshold <= 1:
        msg = f"`threshold` must lie in [0, 1] (scores are probabilities), got {threshold}."
        raise ValueError(msg)
    params: dict[str, Any] = {"key": key, "threshold": float(threshold)}
    if model is not None:
        if not isinstance(model, TumorClassifier):
            msg = f"`model` must be a TumorClassifier from `ht.tl.fit_tumor_classifier`, got {type(model).__name__}."
            raise TypeError(msg)
        score = model.predict_proba(frame)
        params.update(method="classifier", genes=list(model.genes), trained_on=list(model.trained_on))
    else:
        positive, negative = _markers(signature)
        raw, genes = signature_score(frame, positive, negative)
        score = 1 / (1 + np.exp(-raw))
        params.update(method="signature", genes=genes["used_positive"] + genes["used_negative"], **genes)
        if genes["skipped"]:
            logger.info(
                "tumor signature: skipped %s (not predicted or constant)", format_ids(genes["skipped"], 8)
            )
    score_key = f"{key_added}_score"
    if score_key in table.obs:
        logger.info("replacing %s.obs[%r]", table_key, score_key)
    table.obs[score_key] = score.astype(np.float64)
    table.obs[key_added] = score >= threshold
    table.uns[UNS_KEY] = {"params": params}
    log_added(f"{table_key}.obs[{score_key!r}]", (table.n_obs,))
    log_added(f"{table_key}.obs[{key_added!r}]", (table.n_obs,))
    log_added(f"{table_key}.uns[{UNS_KEY!r}]['params']")
    return pd.Series(table.obs[score_key].to_numpy(), index=table.obs_names, name=score_key)


def _markers(signature) -> tuple[list[str], list[str]]:
    if signature is None:
        return list(TUMOR_MARKERS), list(NON_TUMOR_MARKERS)
    if isinstance(signature, Mapping):
        unknown = set(signature) - {"positive", "negative"}
        if unknown or "positive" not in signature:
            msg = f"A signature dict needs a 'positive' list (and optionally 'negative'); got keys {list(signature)}."
            raise ValueError(msg)
        return list(signature["positive"]), list(signature.get("negative", ()))
    if isinstance(signature, str):
        return [signature], []
    return list(signature), []


@doc_params
def tumor_score_auc(
    sdata: SpatialData,
    *,
    label_key: str,
    score_key: str = TUMOR_SCORE_KEY,
    table_key: str = TABLE_KEY,
) -> float:
    """AUC of a tumor score against a boolean label column (e.g. HER2ST's region labels).

    Parameters
    ----------
    sdata
        A section with ``obs[score_key]`` (from :func:`tumor_regions` or a predictor) and ``obs[label_key]``.
    label_key
        Boolean ``obs`` column of true labels; spots with missing labels are left out.
    score_key
        The score's ``obs`` column.
    {table_key}

    Returns
    -------
    The area under the ROC curve (NaN when the known labels hold one class only); writes nothing.
    """
    obs = check_section(sdata, table_key, obs=[score_key, label_key]).obs
    _labels(obs, label_key, table_key)  # a clear error for a non-boolean label column
    return tumor_auc(obs, pd.DataFrame({TUMOR_SCORE_KEY: obs[score_key]}), label_key)
