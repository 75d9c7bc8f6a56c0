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

from ._constants import SAMPLE_KEY, TABLE_KEY
from ._demo_report import KEY, build_report, expression_levels, is_number, tumor_scores_by_region
from ._logging import logger
from .datasets import HER2ST_SECTIONS

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from spatialdata import SpatialData


#: The image features of the HER2ST sections that the demo and ``hist2st bench`` fit on: lite0 of three patch
#: sizes, and the mean over the spots within 300 um (1.5 ST grid steps) of the two larger ones.
SCALES_UM: tuple[float, ...] = (56.0, 112.0, 224.0)
CONTEXT_UM: tuple[float, ...] = (112.0, 224.0)
CONTEXT_RADIUS_UM = 300.0


def her2st_features(working_mpp: float | None) -> dict[str, Any]:
    """The features of :data:`SCALES_UM` and :data:`CONTEXT_UM` rendered at ``working_mpp`` (``None``: as
    scanned), as the feature recipe that :func:`hist2st_tk.pp.model_features` computes. At 0.7 um/px they
    are the features the default model reads (``X_lite0_56um`` ... ``X_lite0_224um_nbr``)."""
    inputs: dict[str, dict[str, Any]] = {
        f"X_lite0_{um:g}um": {"encoder": "lite0", "patch_um": um, "working_mpp": working_mpp}
        for um in SCALES_UM
    }
    graph = {"method": "radius", "radius_um": CONTEXT_RADIUS_UM}
    for um in CONTEXT_UM:
        key = f"X_lite0_{um:g}um"
        inputs[f"{key}_nbr"] = {**inputs[key], "aggregated_from": key, "graph": graph}
    return {"method": "lite0", "use_rep": list(inputs), "inputs": inputs}


def sections_with_features(
    names: Sequence[str],
    *,
    data_dir: str | Path | None,
    cache_dir: str | Path,
    recipe: Mapping[str, Any] | None = None,
    renderings: bool = True,
    name_working_mpp: bool = False,
    progress: bool = True,
) -> dict[str, SpatialData]:
    """The HER2ST sections ``names`` with the features a recipe is fitted on (:func:`her2st_features` at its
    ``working_mpp``), and each section as a scanner of every ``augment_mpp`` of the recipe would have imaged
    it (``"C2@4"``, :func:`hist2st_tk.pp.perturb`).

    Each is written once to ``cache_dir`` as ``{name}_lite0{_at<working_mpp>}{_scan<mpp>}.zarr`` and read
    back from there, so that images are read tile by tile; a store that lacks the context features (as
    older ``hist2st bench`` caches do) gets them when read. ``recipe``: ``None`` for
    :data:`hist2st_tk.models.DEFAULT_RECIPE`; ``renderings=False`` leaves the ``augment_mpp`` scans out;
    ``name_working_mpp`` puts the working resolution in the file names (``_at0.7``), so that one folder
    holds the features of recipes of several (``hist2st bench``; the demo's folder holds one).
    """
    from . import datasets, io, models, pp

    recipe = models.DEFAULT_RECIPE if recipe is None else recipe
    working = recipe.get("working_mpp")
    features = her2st_features(working)
    tag = f"_at{working:g}" if name_working_mpp and working is not None else ""
    loaded = {}
    for name in names:
        for mpp in (None, *(recipe.get("augment_mpp", ()) if renderings else ())):
            path = Path(cache_dir) / f"{name}_lite0{tag}{'' if mpp is None else f'_scan{mpp:g}'}.zarr"
            if not path.exists():
                sdata = datasets.her2st(name, data_dir=data_dir)
                if mpp is not None:
                    sdata = pp.perturb(sdata, mpp=mpp)
                pp.model_features(sdata, features, progress=progress)
                io.write_zarr(sdata, path)
            sdata = io.read_zarr(path)
            if any(key not in sdata[TABLE_KEY].obsm for key in features["use_rep"]):
                pp.model_features(sdata, features, progress=progress)
            loaded[name if mpp is None else f"{name}@{mpp:g}"] = sdata
    return loaded


def with_renderings(train: Sequence[str], sections: Mapping[str, Any]) -> list[str]:
    """The training sections ``train`` and their renderings at other resolutions (``"C2@4"``) among
    ``sections``, in the order of ``sections``."""
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
    train = [rendered[n] for n in with_renderings([s for s in sections if s != test_section], rendered)]

    genes = models.default_panel([data[s]["table"] for s in sections if s != test_section])
    model = tl.fit_predictor(train, genes=genes, **models.fit_options(models.DEFAULT_RECIPE))
    tl.predict_expression(test, model)
    metrics = tl.evaluate(test, key=KEY, label_key="tumor")
    clock.lap(f"fit on {len(train)} sections, predict and evaluate {test_section}")

    clusters = _clusters(test)
    head_auc = metrics.get("tumor_auc", np.nan)
    tl.tumor_regions(test, key=KEY, key_added="tumor_predicted")
    signature_auc = tl.tumor_score_auc(test, label_key="tumor", score_key="tumor_predicted_score")
    regions = tl.compare_regions(test, groupby="tumor_predicted", key=KEY)
    clock.lap("Leiden clusters, tumor regions, region comparison")

    folds = [(s, with_renderings([o for o in sections if o != s], rendered), [s]) for s in sections]
    cv = tl.cross_validate(rendered, protocol=folds, **models.fit_options(models.DEFAULT_RECIPE))
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
        build_report(
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
            region_table=tumor_scores_by_region(test[TABLE_KEY].obs),
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
    wrong = [str(c) for c in frame.columns if not is_number(frame[c])]
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
