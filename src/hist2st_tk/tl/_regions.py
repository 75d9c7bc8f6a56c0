"""Tumor regions from predicted expression, and differential predicted expression between regions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import TABLE_KEY
from .._docs import doc_params
from .._logging import format_ids, log_added, logger
from .._markers import NON_TUMOR_MARKERS, TUMOR_MARKERS
from .._metrics import tumor_auc
from .._sdata import get_table, named_sections, patients, predictions

if TYPE_CHECKING:
    from spatialdata import SpatialData

UNS_KEY = "tumor_regions"
COMPARE_KEY = "compare_regions"


def common_genes(frames: Sequence[pd.DataFrame]) -> list[str]:
    """Genes (columns) present in every frame, in the first frame's order."""
    return [g for g in frames[0].columns if all(g in f.columns for f in frames[1:])]


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
        table = get_table(sd, table_key)
        _, frame = predictions(table, key, table_key)
        known = _labels(table.obs, label_key, name)
        frames.append(frame.loc[known.index])
        labels.append(known)
    shared = common_genes(frames)
    if genes is not None:
        missing = pd.Index(genes).difference(shared)
        if len(missing):
            msg = f"{len(missing)} genes are not predicted in every training section: {format_ids(missing)}."
            raise KeyError(msg)
        shared = list(genes)
    genes = shared
    if not genes:
        msg = "The training sections' predictions share no gene; predict them with one model."
        raise ValueError(msg)
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
    table = get_table(sdata, table_key)
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
    score_key: str = "tumor_score",
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
    obs = get_table(sdata, table_key).obs
    for column in (score_key, label_key):
        if column not in obs:
            msg = f"No obs[{column!r}] in table {table_key!r}; obs columns: {list(obs.columns)}."
            raise KeyError(msg)
    _labels(obs, label_key, table_key)  # a clear error for a non-boolean label column
    return tumor_auc(obs, pd.DataFrame({"tumor_score": obs[score_key]}), label_key)


#: Columns of the table :func:`compare_regions` returns.
COMPARE_COLUMNS: tuple[str, ...] = (
    "gene", "scope", "group", "reference", "mean_group", "mean_reference", "log_fold_change",
    "effect_size", "statistic", "pvalue", "pvalue_adj", "n_units", "interpretable", "test",
)  # fmt: skip
_MIN_SPOTS = 2  # a group needs two spots for a variance
#: Fewest units (patients, or sections) of a pooled test whose effect size and p-value are reported: a
#: paired t-test on two units has one degree of freedom and a standard deviation of two differences.
MIN_POOLED_UNITS = 3


@doc_params
def compare_regions(
    sdata_or_list: SpatialData | Mapping[str, SpatialData] | Sequence[SpatialData],
    *,
    groupby: str = "tumor",
    key: str | None = None,
    groups: Sequence[Any] | None = None,
    reference: Any = None,
    table_key: str = TABLE_KEY,
) -> pd.DataFrame:
    """Differential predicted expression between regions, per section and pooled over sections.

    Per section, spots are the units: a two-sided Mann-Whitney U test per gene, with Cohen's d (pooled
    standard deviation) as effect size. Neighbouring spots are not independent, so these p-values are
    optimistic; read them as a ranking. Pooled, the units are patients (``obs["patient"]``) when the
    sections come from at least two, else sections: each unit's mean per group (the mean of its sections'
    spot means) enters a two-sided paired t-test across units, with Cohen's d_z (mean over sd of the paired
    differences) as effect size. With fewer than three units (:data:`MIN_POOLED_UNITS`; HER2ST has two
    patients) that test has one degree of freedom and its effect size is the mean over the standard
    deviation of two differences: neither it nor the p-value can be interpreted, so the pooled rows keep
    the group means and ``log_fold_change`` but hold NaN as ``effect_size``, ``statistic``, ``pvalue`` and
    ``pvalue_adj``, with ``interpretable`` False (and a warning is logged). P-values are adjusted by
    Benjamini-Hochberg over the genes of each (scope, group). Spots with a missing ``groupby`` value are
    left out.

    Parameters
    ----------
    sdata_or_list
        One section, a list (named by ``obs["sample"]``) or a dict name -> SpatialData, each with predictions.
    groupby
        ``obs`` column of regions, e.g. ``"tumor"`` from :func:`tumor_regions` or cluster labels.
    key
        The predictions, ``obsm[key]``; default: each table's only ``predicted_*`` key. Genes predicted in
        every section are compared.
    groups
        Groups to compare with the reference; default: ``True`` for a boolean column, else every group.
    reference
        The group compared against; default: ``False`` for a boolean column, else ``"rest"`` (all other spots).
    {table_key}

    Returns
    -------
    A tidy DataFrame, one row per (gene, scope, group) with columns ``gene``, ``scope`` (the section's name
    or ``"pooled"``), ``group``, ``reference`` (as strings), ``mean_group``, ``mean_reference``,
    ``log_fold_change`` (difference of the mean log-normalised predictions), ``effect_size``,
    ``statistic``, ``pvalue``, ``pvalue_adj``, ``n_units`` (spots of the group per section; units pooled),
    ``interpretable`` (bool: False for pooled rows of fewer than :data:`MIN_POOLED_UNITS` units, whose
    ``effect_size``, ``statistic``, ``pvalue`` and ``pvalue_adj`` are NaN; True otherwise, though
    per-section p-values remain a ranking), ``test``. Writes ``uns["compare_regions"]`` into each table:
    ``results`` (that section's rows and the pooled rows) and ``params``.

    Examples
    --------
    >>> import hist2st_tk as ht
    >>> sections = {}
    >>> for i, patient in enumerate(["p0", "p1"]):
    ...     sdata = ht.datasets.synthetic(n_spots=36, n_genes=4, seed=i, sample=f"s{i}", patient=patient)
    ...     sdata["table"].obsm["predicted_x"] = sdata["table"].to_df()
    ...     sections[f"s{i}"] = sdata
    >>> result = ht.tl.compare_regions(sections, groupby="tumor")
    >>> pooled = result[result["scope"] == "pooled"]
    >>> bool((pooled["n_units"] == 2).all() and not pooled["interpretable"].any() and pooled["pvalue"].isna().all())
    True
    """
    sections = named_sections(sdata_or_list, table_key)
    tables = {name: get_table(sd, table_key) for name, sd in sections.items()}
    frames, labels, keys = {}, {}, set()
    for name, table in tables.items():
        used, frames[name] = predictions(table, key, table_key)
        keys.add(used)
        labels[name] = _region_labels(table.obs, groupby, name)
    boolean = all(pd.api.types.is_bool_dtype(table.obs[groupby]) for table in tables.values())
    wanted, ref = _comparison(labels, groupby, groups, reference, boolean=boolean)
    genes = common_genes(list(frames.values()))
    if not genes:
        msg = "The sections' predictions share no gene; predict them with one model."
        raise ValueError(msg)

    rows, unit_means = [], {}
    for name in sections:
        values = frames[name][genes].to_numpy(dtype=np.float64)
        for group in wanted:
            in_group, in_ref = _masks(labels[name], group, ref)
            if in_group.sum() < _MIN_SPOTS or in_ref.sum() < _MIN_SPOTS:
                logger.info(
                    "compare_regions: section %s has < 2 spots in %r or %r; skipped", name, group, ref
                )
                continue
            a, b = values[in_group], values[in_ref]
            rows.append(_spot_test(genes, name, group, ref, a, b))
            unit_means[name, group] = (a.mean(axis=0), b.mean(axis=0))
    rows.extend(_pooled(genes, wanted, ref, unit_means, patients(sections, table_key)))
    if not rows:
        msg = (
            f"No section has two spots in both {wanted} and {ref!r} of obs[{groupby!r}]; nothing to compare."
        )
        raise ValueError(msg)
    result = _adjust(pd.concat(rows, ignore_index=True))[list(COMPARE_COLUMNS)]

    params = {
        "groupby": groupby,
        "key": sorted(keys),
        "groups": wanted,
        "reference": ref,
        "genes": len(genes),
    }
    for name, table in tables.items():
        mine = result[result["scope"].isin([name, "pooled"])].reset_index(drop=True)
        table.uns[COMPARE_KEY] = {"results": mine, "params": params}
        log_added(f"{table_key}.uns[{COMPARE_KEY!r}] of {name}", mine.shape)
    return result


def _region_labels(obs: pd.DataFrame, groupby: str, name: str) -> pd.Series:
    """``obs[groupby]`` as strings (``<NA>`` where missing), one per row of the table."""
    if groupby not in obs:
        msg = (
            f"Section {name!r} has no obs[{groupby!r}] to group by; obs columns: {list(obs.columns)}. "
            "Run `ht.tl.tumor_regions` (for 'tumor') or a clustering first."
        )
        raise KeyError(msg)
    return obs[groupby].astype("string")


def _comparison(labels, groupby: str, groups, reference, *, boolean: bool) -> tuple[list[str], str]:
    present = sorted(set().union(*(set(v.dropna()) for v in labels.values())))
    if len(present) < 2:
        msg = (
            f"obs[{groupby!r}] holds one group only ({present}) over the sections; "
            "a comparison needs two (e.g. tumor and non-tumor spots)."
        )
        raise ValueError(msg)
    ref = str(reference) if reference is not None else ("False" if boolean else "rest")
    if groups is None:
        wanted = ["True"] if boolean else [g for g in present if g != ref]
    else:
        wanted = [str(g) for g in ([groups] if isinstance(groups, (str, bool)) else groups)]
    unknown = [g for g in [*wanted, ref] if g not in present and g != "rest"]
    if unknown or ref in wanted:
        reason = f"unknown groups {unknown}" if unknown else f"the reference {ref!r} is among `groups`"
        msg = f"Cannot compare in obs[{groupby!r}]: {reason}; its groups are {present}."
        raise ValueError(msg)
    return wanted, ref


def _masks(labels: pd.Series, group: str, ref: str) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the group's and the reference's spots (missing labels are in neither)."""
    in_group = (labels == group).fillna(value=False).to_numpy(dtype=bool)
    in_ref = (labels != group) if ref == "rest" else (labels == ref)
    return in_group, in_ref.fillna(value=False).to_numpy(dtype=bool)


def _cohen_d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cohen's d of the columns of two samples, with the pooled standard deviation (NaN when it is 0)."""
    na, nb = len(a), len(b)
    pooled = np.sqrt(((na - 1) * a.var(axis=0, ddof=1) + (nb - 1) * b.var(axis=0, ddof=1)) / (na + nb - 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pooled > 0, (a.mean(axis=0) - b.mean(axis=0)) / pooled, np.nan)


def _frame(genes, scope: str, group: str, ref: str, mean_a, mean_b, **columns) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "gene": genes,
            "scope": scope,
            "group": group,
            "reference": ref,
            "mean_group": mean_a,
            "mean_reference": mean_b,
            "log_fold_change": mean_a - mean_b,
            **columns,
        }
    )


def _spot_test(genes, scope: str, group: str, ref: str, a: np.ndarray, b: np.ndarray) -> pd.DataFrame:
    """Spots as units: Mann-Whitney U per gene."""
    from scipy.stats import mannwhitneyu

    test = mannwhitneyu(a, b, axis=0, alternative="two-sided")
    return _frame(
        genes, scope, group, ref, a.mean(axis=0), b.mean(axis=0),
        effect_size=_cohen_d(a, b), statistic=test.statistic, pvalue=test.pvalue, n_units=len(a),
        interpretable=True, test="mann-whitney-u (spots)",
    )  # fmt: skip


def _pooled(genes, wanted, ref: str, unit_means: dict, patients: dict[str, str]) -> list[pd.DataFrame]:
    """Patients (or sections) as units: a paired t-test of their mean per group (NaN with too few units)."""
    by_patient = len(set(patients.values())) >= 2
    rows = []
    for group in wanted:
        units: dict[str, list] = {}
        for (section, g), means in unit_means.items():
            if g == group:
                units.setdefault(patients[section] if by_patient else section, []).append(means)
        if len(units) < 2:
            logger.info("compare_regions: fewer than 2 units have %r and %r; no pooled test", group, ref)
            continue
        a = np.array([np.mean([m[0] for m in v], axis=0) for v in units.values()])
        b = np.array([np.mean([m[1] for m in v], axis=0) for v in units.values()])
        unit = "patients" if by_patient else "sections"
        interpretable = len(units) >= MIN_POOLED_UNITS
        if not interpretable:
            logger.warning(
                "compare_regions: the pooled test of %r against %r has %d %s (fewer than %d): not "
                "interpretable, its effect sizes and p-values are NaN",
                group, ref, len(units), unit, MIN_POOLED_UNITS,
            )  # fmt: skip
        rows.append(
            _frame(
                genes,
                "pooled",
                group,
                ref,
                a.mean(axis=0),
                b.mean(axis=0),
                **_paired_t(a - b, interpretable=interpretable),
                n_units=len(units),
                interpretable=interpretable,
                test=f"paired t ({unit})",
            )
        )
    return rows


def _paired_t(diff: np.ndarray, *, interpretable: bool) -> dict[str, np.ndarray]:
    """Cohen's d_z, t statistic and two-sided p-value per column of paired differences (units x genes);
    all NaN when not ``interpretable``."""
    from scipy.stats import t as student_t

    if not interpretable:
        nan = np.full(diff.shape[1], np.nan)
        return {"effect_size": nan, "statistic": nan, "pvalue": nan}
    n = len(diff)
    sd = diff.std(axis=0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        d_z = np.where(sd > 0, diff.mean(axis=0) / sd, np.nan)
    statistic = d_z * np.sqrt(n)
    return {"effect_size": d_z, "statistic": statistic, "pvalue": 2 * student_t.sf(np.abs(statistic), n - 1)}


def _adjust(result: pd.DataFrame) -> pd.DataFrame:
    """Benjamini-Hochberg adjusted p-values within each (scope, group); NaN p-values stay NaN."""
    from scipy.stats import false_discovery_control

    adjusted = pd.Series(np.nan, index=result.index)
    for _, rows in result.groupby(["scope", "group"], sort=False):
        finite = rows["pvalue"].dropna()
        if len(finite):
            adjusted[finite.index] = false_discovery_control(finite.to_numpy(), method="bh")
    return result.assign(pvalue_adj=adjusted)
