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

from ._constants import TABLE_KEY
from ._logging import logger
from .bench._report import markdown_table
from .datasets import HER2ST_SECTIONS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from spatialdata import SpatialData

#: The predictor of the demo: the default model's recipe (see ``scripts/train_default_model.py``).
KEY = "predicted_ridge"


def recipe() -> dict[str, Any]:
    """How the default model's recipe is fitted (:data:`hist2st_tk.bench._accuracy.DEFAULT_RECIPE`)."""
    from .bench._accuracy import DEFAULT_RECIPE, fit_options

    return fit_options(DEFAULT_RECIPE)


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

    from . import tl
    from .bench._accuracy import DEFAULT_RECIPE, load_sections, recipe_folds, recipe_panel, with_renderings

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
    rendered = load_sections(
        data_dir=data_dir,
        cache_dir=out / "sections",
        sections=sections,
        progress=True,
        recipe=DEFAULT_RECIPE,
        augmented=True,
    )
    data = {name: rendered[name] for name in sections}
    clock.lap("features (lite0 at 56/112/224 um, context within 300 um; scans at 0.69 and 4 um/px)")
    test = data[test_section]
    train = [rendered[n] for n in with_renderings([s for s in sections if s != test_section], rendered)]

    genes = recipe_panel([data[s]["table"] for s in sections if s != test_section])
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

    cv = tl.cross_validate(rendered, protocol=recipe_folds("leave-one-section-out", rendered), **recipe())
    for name, sdata in data.items():  # every section's held-out predictions, for the pooled analyses
        sdata[TABLE_KEY].obsm["predicted_cv"] = cv.predictions[name][name]
    pooled = tl.compare_regions(data, groupby="tumor", key="predicted_cv")
    patients = tl.survival_table(data, patient_key="sample", key="predicted_cv")
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
            cv=cv,
            clusters=clusters,
            aucs={
                "tumor head (logistic on the marker signature of its predictions)": head_auc,
                "marker signature (predicted expression)": signature_auc,
            },
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


def _figures(test: SpatialData, cv, out: Path) -> dict[str, str]:
    """The report's figures, written into ``out``: title -> file name."""
    from . import pl

    scores = test[TABLE_KEY].var[f"{KEY}_pearson"].dropna().sort_values(ascending=False)
    genes = list(dict.fromkeys(g for g in ("ERBB2", *scores.index[:2]) if g in scores.index))
    plots = {
        "expression.png": (
            "Predicted and measured expression (same colour scale per gene)",
            lambda path: pl.spatial_expression(test, genes, key=KEY, save=path),
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


def _report(
    *,
    test_section: str,
    train: list[str],
    metrics: dict,
    cv,
    clusters: dict,
    aucs: dict[str, float],
    regions: pd.DataFrame,
    pooled: pd.DataFrame,
    patients: pd.DataFrame,
    figures: dict[str, str],
    timings: list[tuple[str, float]],
) -> str:
    summary = cv.summary()[["pearson", "spearman", "spot_pearson", "mae", "tumor_auc"]].round(3)
    main = pd.DataFrame(
        [
            {
                k: round(float(v), 3)
                for k, v in metrics.items()
                if k in ("pearson", "spearman", "spot_pearson", "mae", "r2")
            }
        ]
    )
    top = regions.sort_values("pvalue_adj").head(10)
    top_pooled = pooled[pooled["scope"] == "pooled"].sort_values("pvalue").head(10)
    columns = ["gene", "log_fold_change", "effect_size", "pvalue_adj"]
    lines = [
        "# hist2st_tk demo: predicted expression on HER2ST",
        "",
        "Data: HER2-positive breast cancer, legacy ST (Andersson et al., Nat Commun 12, 6012, 2021). "
        "Predictor: ridge on frozen lite0 features of 56/112/224 um patches and the mean features of the "
        "spots within 300 um, centred per section, trained on each section as scanned and as a 4 um/px "
        "scanner would have imaged it; tumor head on the marker signature of its predictions (the default "
        "model's recipe).",
        "",
        f"## 1. Fit on {', '.join(train)}, predict {test_section}",
        "",
        f"Mean over the {int(metrics['n_genes'])} panel genes (250 highest mean expression on the training "
        f"sections, plus the tumor signature's markers) of each per-gene metric on the {int(metrics['n_spots'])} spots of {test_section}:",
        "",
        markdown_table(main),
        "",
        f"## 2. Leave-one-section-out over {len(cv.predictions)} sections",
        "",
        "Each section predicted by a model fitted on the others; panels chosen on the training sections.",
        "",
        markdown_table(summary.reset_index()),
        "",
        f"## 3. Clusters of predicted expression ({test_section})",
        "",
        f"Leiden on `obsm['{KEY}']` against the authors' region labels: ARI {clusters['ari']:.3f}, "
        f"NMI {clusters['nmi']:.3f}; {clusters['n_majority']} of {clusters['n_spots']} spots fall in their "
        "cluster's majority region.",
        "",
        "## 4. Tumor regions",
        "",
        *[f"- AUC against the authors' tumor labels, {name}: {auc:.3f}" for name, auc in aucs.items()],
        "",
        f"Top genes between predicted tumor and non-tumor spots of {test_section} (Mann-Whitney per spot; "
        "read the p-values as a ranking, spots are not independent):",
        "",
        markdown_table(top[columns].round(4)),
        "",
        "Pooled over sections (authors' labels, held-out predictions; units = patients, paired t-test; "
        "HER2ST has two patients, so effect sizes are unstable and p-values a ranking at best):",
        "",
        markdown_table(top_pooled[[*columns[:3], "pvalue", "n_units"]].round(4)),
        "",
        "## 5. Patient-level table",
        "",
        f"`patients.csv` / `patients.parquet`: one row per section (pseudo-patient), {patients.shape[1]} "
        "columns of mean predicted expression and tumor fraction, ready to join with a clinical table "
        "(`ht.tl.survival_table(..., clinical=...)`, then `ht.tl.cox`). HER2ST has no survival data.",
        "",
        "## Figures",
        "",
        *[f"### {title}\n\n![{title}]({name})\n" for title, name in figures.items()],
        "## Time per step (2 CPU cores)",
        "",
        *[f"- {step}: {seconds:.0f} s" for step, seconds in timings],
        "",
    ]
    return "\n".join(lines)
