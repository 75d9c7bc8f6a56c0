"""The demo's report: its tables (levels, region scores, cross-validated AUCs) and its Markdown text,
built from what :func:`hist2st_tk._demo.run_demo` computed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._constants import TUMOR_SCORE_KEY, predicted_key
from ._markdown import markdown_table

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

#: The predictions of the demo: those of the default model's recipe (:data:`hist2st_tk.models.DEFAULT_RECIPE`).
KEY = predicted_key("ridge")


def expression_levels(table, genes: Sequence[str]) -> pd.DataFrame:
    """Mean predicted and measured expression of ``genes`` over the spots, with their Pearson's r.

    Parameters
    ----------
    table
        The test section's table, with predictions ``obsm["predicted_ridge"]``, measured ``X`` and
        ``var["predicted_ridge_pearson"]`` (from :func:`hist2st_tk.tl.evaluate`).
    genes
        Genes both predicted and measured.

    Returns
    -------
    One row per gene: ``gene``, ``predicted mean``, ``measured mean`` (log1p normalised counts) and
    ``pearson`` (across the spots).
    """
    genes = list(genes)
    missing = [g for g in genes if g not in table.obsm[KEY].columns or g not in table.var_names]
    if not genes or missing:
        msg = f"`genes` must be predicted and measured genes; got {genes}, not both: {missing}."
        raise ValueError(msg)
    return pd.DataFrame(
        {
            "gene": genes,
            "predicted mean": table.obsm[KEY][genes].mean(axis=0).to_numpy(),
            "measured mean": table[:, genes].to_df().mean(axis=0).to_numpy(),
            "pearson": table.var.loc[genes, f"{KEY}_pearson"].to_numpy(dtype=np.float64),
        }
    )


def region_scores(
    obs: pd.DataFrame,
    scores: Mapping[str, str],
    *,
    label_key: str = "region_label",
    tumor_key: str = "tumor",
) -> pd.DataFrame:
    """Mean tumor score per annotated region, to see where a score disagrees with the labels.

    Parameters
    ----------
    obs
        A section's ``obs`` with region labels, tumor labels and scores.
    scores
        Column title in the result -> numeric ``obs`` column of a score (e.g.
        ``{"tumor head score": "tumor_score"}``).
    label_key
        ``obs`` column of regions (HER2ST's ``region_label``: the data authors' annotation of its
        expression clusters).
    tumor_key
        ``obs`` column of the boolean tumor labels the regions carry (``"unknown"`` where missing).

    Returns
    -------
    One row per region with spots: ``region``, ``tumor label``, ``spots`` and the mean of each score,
    sorted by the first score, highest first. Spots without a region are left out.
    """
    if not scores:
        msg = "`scores` must name at least one score column, e.g. {'tumor score': 'tumor_score'}."
        raise ValueError(msg)
    for column in (label_key, tumor_key, *scores.values()):
        if column not in obs:
            msg = f"No obs[{column!r}]; obs columns: {list(obs.columns)}."
            raise KeyError(msg)
    wrong = [c for c in scores.values() if not is_number(obs[c])]
    if wrong:
        msg = f"Score columns must be numeric, not {[f'{c} ({obs[c].dtype})' for c in wrong]}."
        raise TypeError(msg)
    frame = pd.DataFrame(
        {
            "region": obs[label_key].astype("string"),
            "tumor label": obs[tumor_key].astype("string").fillna("unknown"),
            **{title: obs[column].astype(np.float64) for title, column in scores.items()},
        }
    ).dropna(subset=["region"])
    grouped = frame.groupby("region", sort=False)
    table = grouped[list(scores)].mean()
    table.insert(0, "spots", grouped.size())
    table.insert(0, "tumor label", grouped["tumor label"].agg(lambda v: "/".join(sorted(set(v)))))
    return table.sort_values(next(iter(scores)), ascending=False).reset_index()


def is_number(values: pd.Series) -> bool:
    """Numeric and not boolean."""
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def tumor_scores_by_region(obs: pd.DataFrame) -> pd.DataFrame:
    """The demo's two tumor scores (those the section has) per HER2ST region of the test section."""
    scored = {
        "tumor head score (tumor map)": TUMOR_SCORE_KEY,
        "marker signature score": "tumor_predicted_score",
    }
    return region_scores(obs, {title: column for title, column in scored.items() if column in obs})


def _patient(section: str) -> str:
    """A HER2ST section's patient: its first letter (``"B4"`` -> ``"B"``), as :func:`recipe_folds` has it."""
    return section[0]


def _cv_aucs(cv) -> pd.DataFrame:
    """Each held-out section's tumor AUC in the cross-validation, and the sections its model was trained on."""
    folds = cv.folds.drop_duplicates("fold")
    held_out = list(folds["held_out"])
    return pd.DataFrame(
        {
            "held-out section": held_out,
            "trained on": [", ".join(s for s in held_out if s != name) for name in held_out],
            "tumor_auc": folds["tumor_auc"].to_numpy(dtype=np.float64),
        }
    )


def _level_note(test_section: str, train: list[str]) -> str:
    """Why r2 and MAE are poor while Pearson is not."""
    patients = sorted({_patient(s) for s in train})
    if _patient(test_section) in patients:
        origin = f"{test_section} is another section and library (levels shift between libraries)"
    else:
        origin = (
            f"{test_section} comes from another patient ({_patient(test_section)}; training: "
            f"{', '.join(patients)}) and another library"
        )
    return (
        "Absolute levels differ from the measured ones because the model predicts at the level of its "
        f"training sections ({', '.join(train)}) and {origin}: r2 and MAE score the level, so they are "
        "poor, while Pearson's r (per gene, across spots) and the z-score maps (each gene standardised "
        "within the section) score the pattern within the slide."
    )


def _fit_lines(test_section: str, train: list[str], metrics: dict, levels: pd.DataFrame) -> list[str]:
    main = pd.DataFrame(
        [
            {
                k: round(float(v), 3)
                for k, v in metrics.items()
                if k in ("pearson", "spearman", "spot_pearson", "mae", "r2")
            }
        ]
    )
    return [
        f"## 1. Fit on {', '.join(train)}, predict {test_section}",
        "",
        f"Mean over the {int(metrics['n_genes'])} panel genes (250 highest mean expression on the training "
        f"sections, plus the tumor signature's markers) of each per-gene metric on the {int(metrics['n_spots'])} spots of {test_section}:",
        "",
        markdown_table(main),
        "",
        _level_note(test_section, train),
        "",
        f"Mean over the spots of {test_section} of the genes in the figures (log1p normalised counts):",
        "",
        markdown_table(levels),
        "",
    ]


def _cv_note(cv, test_section: str, train: list[str]) -> str:
    """How the cross-validation's tumor AUC is computed, and why it differs from section 4's."""
    aucs = _cv_aucs(cv).set_index("held-out section")["tumor_auc"]
    n = len(aucs)
    own = aucs.get(test_section, np.nan)
    shared = [s for s in aucs.index if any(_patient(o) == _patient(s) for o in aucs.index if o != s)]
    note = (
        f"`tumor_auc` here is the mean over the {n} held-out sections of each section's own AUC (the "
        "tumor head's score of its held-out predictions against the authors' labels of that section; "
        f"spots are not pooled across sections). Each section is predicted by a model trained on the other "
        f"{n - 1} (and their 4 um/px renderings) that predicts the fold's protocol panels (the 250 "
        "highest-mean and 50 most variable genes of its training sections), so its tumor head reads the "
        "signature's markers among those genes only. It differs from the AUCs of section 4, which score "
        f"{test_section} alone, predicted by the main fit of section 1 (trained on {', '.join(train)}; "
        f"its panel adds every signature marker the training sections measure): {test_section}'s own fold "
        f"here gives {own:.3f}."
    )
    if shared:
        note += (
            f" {len(shared)} of the {n} held-out sections ({', '.join(shared)}) share their patient with "
            "sections their model was trained on, which makes their task easier than a new patient's."
        )
    return note


def _cv_lines(cv, test_section: str, train: list[str]) -> list[str]:
    summary = cv.summary()[["pearson", "spearman", "spot_pearson", "mae", "tumor_auc"]].round(3)
    return [
        f"## 2. Leave-one-section-out over {len(cv.predictions)} sections",
        "",
        "Each section predicted by a model fitted on the others; panels chosen on the training sections.",
        "",
        markdown_table(summary.reset_index()),
        "",
        _cv_note(cv, test_section, train),
        "",
        markdown_table(_cv_aucs(cv)),
        "",
    ]


def _cluster_lines(test_section: str, clusters: dict) -> list[str]:
    return [
        f"## 3. Clusters of predicted expression ({test_section})",
        "",
        f"Leiden on `obsm['{KEY}']` against the authors' region labels: ARI {clusters['ari']:.3f}, "
        f"NMI {clusters['nmi']:.3f}; {clusters['n_majority']} of {clusters['n_spots']} spots fall in their "
        "cluster's majority region.",
        "",
    ]


#: What HER2ST's tumor labels are, said beside every use of them.
LABELS_NOTE = (
    "The True/False tumor labels (right panel of the tumor map) are the data authors' regions, not a "
    "pathologist's: HER2ST's annotation of clusters of measured expression (`obs['region_label']`), True "
    "where the authors annotated the cluster as cancer."
)


def _tumor_lines(
    test_section: str, train: list[str], aucs: dict[str, float], cv, regions: pd.DataFrame
) -> list[str]:
    folds = _cv_aucs(cv).set_index("held-out section")["tumor_auc"]
    return [
        "## 4. Tumor regions",
        "",
        *[f"- AUC against the authors' tumor labels, {name}: {auc:.3f}" for name, auc in aucs.items()],
        "",
        f"Both AUCs are of {test_section} alone, predicted by the main fit of section 1 (trained on "
        f"{', '.join(train)}). The `tumor_auc` of section 2 ({folds.mean():.3f}) is instead the mean of the "
        f"{len(folds)} held-out sections' own AUCs under cross-validation, {test_section}'s fold giving "
        f"{folds.get(test_section, np.nan):.3f} (see there for how they differ). " + LABELS_NOTE,
        "",
        f"Mean tumor score per authors' region of {test_section} (where the score goes wrong: regions "
        "labelled False that score high, or True that score low):",
        "",
        markdown_table(regions),
        "",
    ]


def _comparison_lines(test_section: str, regions: pd.DataFrame, pooled: pd.DataFrame) -> list[str]:
    columns = ["gene", "log_fold_change", "effect_size", "pvalue_adj"]
    top = regions.sort_values("pvalue_adj").head(10)
    return [
        f"Top genes between predicted tumor and non-tumor spots of {test_section} (Mann-Whitney per spot; "
        "read the p-values as a ranking, spots are not independent):",
        "",
        markdown_table(top[columns]),
        "",
        *_pooled_lines(pooled[pooled["scope"] == "pooled"]),
    ]


def _pooled_lines(pooled: pd.DataFrame) -> list[str]:
    """The pooled comparison's rows, or in words why there are none to read."""
    intro = "Pooled over sections (authors' labels, held-out predictions; paired t-test of the units' means)"
    if pooled.empty:
        return [f"{intro}: fewer than two units have both regions; no pooled comparison.", ""]
    units = pooled["test"].iloc[0].removeprefix("paired t (").removesuffix(")")
    if not pooled["interpretable"].any():
        n = int(pooled["n_units"].max())
        return [
            f"{intro}: with {n} {units}, fewer than 3, the pooled test is not interpretable (one degree "
            "of freedom; its effect sizes and p-values are NaN in `regions_pooled.csv`, where "
            "`interpretable` is False), so no pooled gene is reported as a finding.",
            "",
        ]
    top = pooled[pooled["interpretable"]].sort_values("pvalue").head(10)
    return [
        f"{intro}, units = {units}:",
        "",
        markdown_table(top[["gene", "log_fold_change", "effect_size", "pvalue", "pvalue_adj", "n_units"]]),
        "",
    ]


def _patient_lines(patients: pd.DataFrame) -> list[str]:
    return [
        "## 5. Patient-level table",
        "",
        f"`patients.csv` / `patients.parquet`: one row per section (pseudo-patient), {patients.shape[1]} "
        "columns of mean predicted expression and tumor fraction, ready to join with a clinical table "
        "(`ht.tl.survival_table(..., clinical=...)`, then `ht.tl.cox`). HER2ST has no survival data.",
        "",
    ]


def _captions(test_section: str) -> dict[str, str]:
    """Text under a figure, by file name."""
    return {
        "expression_z.png": (
            f"Each gene's predicted and measured values standardised over the spots of {test_section} "
            "(mean 0, standard deviation 1 each): where the two maps agree the predictor has the pattern "
            "right, whatever its level."
        ),
        "tumor_map.png": LABELS_NOTE,
    }


def _figure_lines(figures: dict[str, str], captions: dict[str, str]) -> list[str]:
    lines = ["## Figures", ""]
    for title, name in figures.items():
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
        if name in captions:
            lines += [captions[name], ""]
    return lines


def build_report(
    *,
    test_section: str,
    train: list[str],
    metrics: dict,
    levels: pd.DataFrame,
    cv,
    clusters: dict,
    aucs: dict[str, float],
    region_table: pd.DataFrame,
    regions: pd.DataFrame,
    pooled: pd.DataFrame,
    patients: pd.DataFrame,
    figures: dict[str, str],
    timings: list[tuple[str, float]],
) -> str:
    lines = [
        "# hist2st_tk demo: predicted expression on HER2ST",
        "",
        "Data: HER2-positive breast cancer, legacy ST (Andersson et al., Nat Commun 12, 6012, 2021). "
        "Predictor: ridge on frozen lite0 features of 56/112/224 um patches and the mean features of the "
        "spots within 300 um, centred per section, trained on each section as scanned and as a 4 um/px "
        "scanner would have imaged it; tumor head on the marker signature of its predictions (the default "
        "model's recipe).",
        "",
        *_fit_lines(test_section, train, metrics, levels),
        *_cv_lines(cv, test_section, train),
        *_cluster_lines(test_section, clusters),
        *_tumor_lines(test_section, train, aucs, cv, region_table),
        *_comparison_lines(test_section, regions, pooled),
        *_patient_lines(patients),
        *_figure_lines(figures, _captions(test_section)),
        "## Time per step (2 CPU cores)",
        "",
        *[f"- {step}: {seconds:.0f} s" for step, seconds in timings],
        "",
    ]
    return "\n".join(lines)
