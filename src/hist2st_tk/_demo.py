"""The main job, end to end on real data: what ``make demo`` and ``hist2st demo`` run.

features -> fit on the training sections -> predict the test section -> evaluate -> Leiden clusters of
predicted expression -> tumor regions and region comparison -> patient-level table -> a Markdown report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ._constants import SAMPLE_KEY, TABLE_KEY, TUMOR_SCORE_KEY
from ._logging import logger
from ._markdown import markdown_table
from .datasets import HER2ST_SECTIONS

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from spatialdata import SpatialData

#: The predictor of the demo: the default model's recipe (:data:`hist2st_tk.models.DEFAULT_RECIPE`).
KEY = "predicted_ridge"


def recipe() -> dict[str, Any]:
    """How the default model's recipe is fitted: the keyword arguments of :func:`hist2st_tk.tl.fit_predictor`."""
    from .models import DEFAULT_RECIPE
    from .models._default import FEATURE_OPTIONS

    return {k: v for k, v in DEFAULT_RECIPE.items() if k not in FEATURE_OPTIONS}


def sections_with_features(
    names: Sequence[str], *, data_dir: str | Path | None, cache_dir: Path
) -> dict[str, SpatialData]:
    """The HER2ST sections ``names`` with the features the default model reads (:func:`hist2st_tk.pp.model_features`),
    and each section as a scanner of every ``augment_mpp`` of the recipe would have imaged it
    (``"C2@4"``, :func:`hist2st_tk.pp.perturb`): written once to ``cache_dir`` and read back from there, so
    that images are read tile by tile."""
    from . import datasets, io, models, pp

    model = models.default_model()
    loaded = {}
    for name in names:
        for mpp in (None, *models.DEFAULT_RECIPE["augment_mpp"]):
            path = cache_dir / f"{name}_lite0{'' if mpp is None else f'_scan{mpp:g}'}.zarr"
            if not path.exists():
                sdata = datasets.her2st(name, data_dir=data_dir)
                if mpp is not None:
                    sdata = pp.perturb(sdata, mpp=mpp)
                pp.model_features(sdata, model, progress=True)
                io.write_zarr(sdata, path)
            loaded[name if mpp is None else f"{name}@{mpp:g}"] = io.read_zarr(path)
    return loaded


def _with_renderings(train: Sequence[str], sections: Mapping[str, Any]) -> list[str]:
    """The training sections and their renderings (``"C2@4"``) among ``sections``."""
    return [name for name in sections if name.split("@")[0] in train]


def run_demo(
    out_dir: str | Path = "demo_output",
    *,
    sections: Sequence[str] = HER2ST_SECTIONS,
    test_section: str = "B4",
    data_dir: str | Path | None = None,
) -> Path:
    """Run the main job on HER2ST sections and write a report with its figures and tables.

    Parameters
    ----------
    out_dir
        Output folder: ``report.md``, figures (``*.png``), ``metrics_*.csv``, ``patients.csv`` /
        ``.parquet``, ``regions_*.csv`` and ``sections/{section}_lite0.zarr`` (each section with its features
        and predictions).
    sections
        HER2ST sections to use; ``test_section`` is predicted by a model fitted on the others.
    test_section
        The held-out section of the main fit.
    data_dir
        Where the HER2ST files are (see :func:`hist2st_tk.datasets.her2st`).

    Returns
    -------
    The path of the report.
    """
    import matplotlib.pyplot as plt

    from . import models, tl

    sections = list(dict.fromkeys(sections))
    if test_section not in sections or len(sections) < 2:
        msg = (
            f"`sections` must hold the test section {test_section!r} and at least one other; got {sections}."
        )
        raise ValueError(msg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clock = _Clock()
    # with each section as a 4 um/px scanner would have imaged it ("C2@4"), the training renderings
    rendered = sections_with_features(sections, data_dir=data_dir, cache_dir=out / "sections")
    data = {name: rendered[name] for name in sections}
    clock.lap("features (lite0 at 56/112/224 um, context within 300 um; scans at 0.69 and 4 um/px)")
    test = data[test_section]
    train = [rendered[n] for n in _with_renderings([s for s in sections if s != test_section], rendered)]

    genes = models.default_panel([data[s]["table"] for s in sections if s != test_section])
    model = tl.fit_predictor(train, genes=genes, **recipe())
    tl.predict_expression(test, model)
    metrics = tl.evaluate(test, key=KEY, label_key="tumor")
    clock.lap(f"fit on {len(train)} sections, predict and evaluate {test_section}")

    clusters = _clusters(test)
    head_auc = metrics.get("tumor_auc", np.nan)
    tl.tumor_regions(test, key=KEY, key_added="tumor_predicted")
    signature_auc = tl.tumor_score_auc(test, label_key="tumor", score_key="tumor_predicted_score")
    regions = tl.compare_regions(test, groupby="tumor_predicted", key=KEY)
    clock.lap("Leiden clusters, tumor regions, region comparison")

    folds = [(s, _with_renderings([o for o in sections if o != s], rendered), [s]) for s in sections]
    cv = tl.cross_validate(rendered, protocol=folds, **recipe())
    for name, sdata in data.items():  # every section's held-out predictions, for the pooled analyses
        sdata[TABLE_KEY].obsm["predicted_cv"] = cv.predictions[name][name]
    pooled = tl.compare_regions(data, groupby="tumor", key="predicted_cv")
    patients = tl.survival_table(data, patient_key=SAMPLE_KEY, key="predicted_cv")
    tl.write_survival_table(patients, out / "patients.csv")
    tl.write_survival_table(patients, out / "patients.parquet")
    clock.lap("leave-one-section-out predictions of every section, pooled comparison, patient table")

    figures = _figures(test, cv, out)
    plt.close("all")
    clock.lap("figures")
    regions.to_csv(out / f"regions_{test_section}.csv", index=False)
    pooled.to_csv(out / "regions_pooled.csv", index=False)
    report = out / "report.md"
    report.write_text(
        _report(
            test_section=test_section,
            train=[s for s in sections if s != test_section],
            metrics=metrics,
            levels=expression_levels(test[TABLE_KEY], _shown_genes(test[TABLE_KEY])),
            cv=cv,
            clusters=clusters,
            aucs={
                "tumor head (logistic on the marker signature of its predictions)": head_auc,
                "marker signature (predicted expression)": signature_auc,
            },
            region_table=_tumor_scores_by_region(test[TABLE_KEY].obs),
            regions=regions,
            pooled=pooled,
            patients=patients,
            figures=figures,
            timings=clock.laps,
        )
    )
    logger.info("demo report: %s", report.resolve())
    return report


class _Clock:
    def __init__(self):
        self.start, self.laps = time.perf_counter(), []

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.laps.append((step, now - self.start))
        self.start = now


def _clusters(sdata: SpatialData) -> dict[str, Any]:
    """Leiden clusters of the predicted expression, compared with the data authors' regions."""
    import scanpy as sc

    from . import tl

    table = sdata[TABLE_KEY]
    # exact neighbours: a few hundred spots need no approximate index (whose compilation takes minutes)
    sc.pp.neighbors(table, use_rep=KEY, n_neighbors=10, transformer="sklearn")
    sc.tl.leiden(table, flavor="igraph", n_iterations=2, directed=False, resolution=0.5, random_state=0)
    return tl.cluster_agreement(sdata, "leiden", "region_label")


def _shown_genes(table) -> list[str]:
    """The genes of the expression figures: ERBB2 and the two best-predicted genes (by Pearson)."""
    scores = table.var[f"{KEY}_pearson"].dropna().sort_values(ascending=False)
    return list(dict.fromkeys(g for g in ("ERBB2", *scores.index[:2]) if g in scores.index))


def within_section_zscores(frame: pd.DataFrame) -> pd.DataFrame:
    """Standardise each gene (column) over the spots (rows) of one section.

    A z-score keeps a gene's pattern within the section and drops its level and spread: predicted and
    measured expression whose levels differ (a model predicts at the level of its training sections)
    look alike when their patterns agree.

    Parameters
    ----------
    frame
        Spots x genes of one section, numeric (e.g. ``obsm["predicted_ridge"]`` or measured ``X``).

    Returns
    -------
    A DataFrame like ``frame``: each column minus its mean over the spots, divided by its standard
    deviation (``ddof=0``), so mean 0 and standard deviation 1 per gene; NaN where a gene is constant
    (it has no pattern). Missing values are left out of the mean and deviation and stay missing.
    """
    if not isinstance(frame, pd.DataFrame):
        msg = f"`frame` must be a DataFrame of spots x genes, got {type(frame).__name__}."
        raise TypeError(msg)
    wrong = [str(c) for c in frame.columns if not _is_number(frame[c])]
    if wrong:
        msg = f"`frame` must hold numeric expression; non-numeric columns: {wrong}."
        raise TypeError(msg)
    values = frame.astype(np.float64)
    varies = values.max(axis=0) > values.min(axis=0)  # exact: the std of a constant can round above 0
    return (values - values.mean(axis=0)) / values.std(axis=0, ddof=0).where(varies)


def _add_zscore_columns(table, genes: Sequence[str]) -> list[str]:
    """Write each gene's within-section z-scores, predicted and measured, to ``obs``; returns the columns.

    ``obs[f"{gene}_predicted_z_score"]`` from ``obsm[KEY]`` and ``obs[f"{gene}_measured_z_score"]``
    from ``X``, in the order predicted, measured per gene (two panels per row in ``pl.spatial``, whose
    colour bars label ``*_z_score`` columns ``"z-score"``).
    """
    predicted = within_section_zscores(table.obsm[KEY][list(genes)])
    measured = within_section_zscores(table[:, list(genes)].to_df())
    columns = []
    for gene in genes:
        for what, values in (("predicted", predicted), ("measured", measured)):
            column = f"{gene}_{what}_z_score"
            table.obs[column] = values[gene].to_numpy()
            columns.append(column)
    return columns


def _figures(test: SpatialData, cv, out: Path) -> dict[str, str]:
    """The report's figures, written into ``out``: title -> file name."""
    from . import pl

    genes = _shown_genes(test[TABLE_KEY])
    zscores = _add_zscore_columns(test[TABLE_KEY], genes)
    plots = {
        "expression.png": (
            "Predicted and measured expression (same colour scale per gene)",
            lambda path: pl.spatial_expression(test, genes, key=KEY, save=path),
        ),
        "expression_z.png": (
            "Predicted and measured expression as within-section z-scores (the pattern, not the level)",
            lambda path: pl.spatial(test, zscores, ncols=2, cmap="RdBu_r", save=path),
        ),
        "scatter.png": (
            "Predicted versus measured, per spot",
            lambda path: pl.predicted_vs_observed(test, genes, key=KEY, save=path),
        ),
        "gene_scores.png": ("Best-predicted genes", lambda path: pl.gene_scores(test, key=KEY, save=path)),
        "gene_scores_cv.png": (
            "Per-gene Pearson of every held-out section (leave-one-section-out)",
            lambda path: pl.gene_scores(cv, save=path),
        ),
        "tumor_map.png": ("Tumor score and the authors' labels", lambda path: pl.tumor_map(test, save=path)),
        "clusters.png": (
            "Leiden clusters of predicted expression and the authors' regions",
            lambda path: pl.spatial(test, ["leiden", "region_label"], save=path),
        ),
    }
    for name, (_, draw) in plots.items():
        draw(out / name)
    return {title: name for name, (title, _) in plots.items()}


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
    wrong = [c for c in scores.values() if not _is_number(obs[c])]
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


def _is_number(values: pd.Series) -> bool:
    """Numeric and not boolean."""
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _tumor_scores_by_region(obs: pd.DataFrame) -> pd.DataFrame:
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


def _report(
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
