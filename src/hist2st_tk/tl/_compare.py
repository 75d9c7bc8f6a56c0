"""Differential predicted expression between regions: per section (spots as units) and pooled over
sections (patients as units)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import TABLE_KEY
from .._docs import doc_params
from .._logging import log_added, logger
from .._sdata import common_genes, named_sections, patients, predictions
from .._section import check_section

if TYPE_CHECKING:
    from spatialdata import SpatialData

COMPARE_KEY = "compare_regions"
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
    tables = {name: check_section(sd, table_key) for name, sd in sections.items()}
    frames, labels, keys = {}, {}, set()
    for name, table in tables.items():
        used, frames[name] = predictions(table, key, table_key)
        keys.add(used)
        labels[name] = _region_labels(table.obs, groupby, name)
    boolean = all(pd.api.types.is_bool_dtype(table.obs[groupby]) for table in tables.values())
    wanted, ref = _comparison(labels, groupby, groups, reference, boolean=boolean)
    genes = common_genes(list(frames.values()))

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
