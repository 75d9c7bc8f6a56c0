"""``hist2st bench accuracy``: every method under the named protocols on the six HER2ST sections, one table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import models
from .._demo import her2st_features, sections_with_features, with_renderings
from .._logging import logger
from .._protocols import HER2ST6, PANELS, REFERENCE
from ._report import write_report

#: The features every recipe reads from (:func:`hist2st_tk._demo.her2st_features`; cached once per section
#: and working resolution): lite0 of three patch sizes, and as context the mean features of the spots within
#: 300 um (1.5 ST grid steps) at the two larger sizes.
FEATURES = her2st_features(None)["use_rep"]
MULTISCALE_REPS = [key for key in FEATURES if not key.endswith("_nbr")]
CONTEXT_REPS = [key for key in FEATURES if key.endswith("_nbr")]

#: Benchmark recipes: the method, what it reads and the CPU budget it gets here (stated in the table).
METHODS: dict[str, dict[str, Any]] = {
    "ridge": {"method": "ridge", "use_rep": "X_lite0_112um"},
    "ridge_multiscale_context": {"method": "ridge", "use_rep": MULTISCALE_REPS + CONTEXT_REPS},
    # DEFAULT_RECIPE: the same features centred per section (Predictor(center=True))
    "ridge_multiscale_context_centred": {
        "method": "ridge",
        "use_rep": MULTISCALE_REPS + CONTEXT_REPS,
        "center": True,
    },
    # DEFAULT_RECIPE: the same, trained on each section as scanned and as a 4 um/px scanner would have
    # imaged it (resolution augmentation; features of finer scans rendered at 0.7 um/px, the training
    # scans' resolution), with the tumor head on the marker signature of the predictions
    "ridge_multiscale_context_centred_multires": dict(models.DEFAULT_RECIPE),
    "histospace": {"method": "histospace", "use_rep": "X_lite0_112um", "max_epochs": 40, "patience": 5},
    "hist_multiscale": {
        "method": "hist_multiscale",
        "use_rep": MULTISCALE_REPS,
        "max_epochs": 40,
        "patience": 5,
    },
    # end-to-end fine-tuning on two CPU cores: about 10 patches/s forward + backward
    "stnet": {
        "method": "stnet",
        "patch_um": 112.0,
        "max_epochs": 2,
        "patience": 1,
        "lr": 1e-4,
        "batch_size": 32,
    },
    # graph, contrastive and operator methods (spatial graph: radius 300 um, built by load_sections)
    # the validation loss of hespotex is noisy from epoch to epoch: more patience
    "hespotex": {"method": "hespotex", "use_rep": "X_lite0_112um", "max_epochs": 40, "patience": 15},
    # image2gene without its position embedding (positions mean nothing across sections), on the
    # features of ridge_multiscale_context
    "image2gene": {
        "method": "image2gene",
        "use_rep": MULTISCALE_REPS + CONTEXT_REPS,
        "use_coords": False,
        "max_epochs": 30,
        "patience": 5,
    },
    "hist2st": {"method": "hist2st", "use_rep": "X_lite0_112um", "max_epochs": 30, "patience": 5},
    "deeponet": {
        "method": "deeponet",
        "use_rep": ["X_lite0_112um", "X_fourier"],
        "max_epochs": 30,
        "patience": 5,
    },
}


#: The name in :data:`METHODS` of the default model's recipe (:data:`hist2st_tk.models.DEFAULT_RECIPE`), also
#: that of ``make demo`` (chosen on the C2-C6 folds; see docs/robustness.md).
DEFAULT_RECIPE = "ridge_multiscale_context_centred_multires"


def fit_options(recipe: str) -> dict[str, Any]:
    """The keyword arguments of ``ht.tl.fit_predictor`` / ``cross_validate`` of the recipe named ``recipe``
    in :data:`METHODS` (:func:`hist2st_tk.models.fit_options`)."""
    return models.fit_options(METHODS[recipe])


def load_sections(
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path = "bench_output/cache",
    sections: Sequence[str] = HER2ST6,
    progress: bool = False,
    recipe: str | None = None,
    augmented: bool = False,
) -> dict[str, Any]:
    """HER2ST sections with the features of the benchmark recipe named ``recipe`` (``None``: as scanned):
    lite0 of 56, 112 and 224 um patches rendered at its ``working_mpp`` and the mean 112 and 224 um
    features of the spots within 300 um; with ``augmented``, each section's renderings at its
    ``augment_mpp`` as ``"{name}@{mpp}"`` too.

    The demo's loader (:func:`hist2st_tk._demo.sections_with_features`), caching into ``cache_dir`` under
    names that carry the working resolution (``{name}_lite0_at0.7_scan4.zarr``), so that recipes of
    several share the folder.
    """
    return sections_with_features(
        sections,
        data_dir=data_dir,
        cache_dir=cache_dir,
        recipe=METHODS[recipe] if recipe is not None else {},
        renderings=augmented,
        name_working_mpp=True,
        progress=progress,
    )


def fit_recipe(sections: dict[str, Any], train: Sequence[str], *, recipe: str = DEFAULT_RECIPE):
    """A model of ``recipe`` fitted on ``train`` (and their renderings in ``sections``), and the
    protocol panels chosen on ``train``: ``(model, {panel: genes})``. The model predicts the union of
    the panels and the default model's panel (:func:`hist2st_tk.models.default_panel`).

    The panels are marked in the training tables as ``var[f"bench_{panel}"]`` (:func:`hist2st_tk.pp.select_genes`).
    """
    from ..pp import select_genes
    from ..tl import fit_predictor

    training = [sections[name] for name in train]
    panels = {
        panel: select_genes(training, n_genes=n, flavor=flavor, key_added=f"bench_{panel}")
        for panel, (flavor, n) in PANELS.items()
    }
    own = models.default_panel([sdata["table"] for sdata in training])
    genes = list(dict.fromkeys([*own, *(g for p in panels.values() for g in p)]))
    fitted_on = [sections[name] for name in with_renderings(train, sections)]
    return fit_predictor(fitted_on, genes=genes, **fit_options(recipe)), panels


def _recipe_sections(method: str, *, data_dir, cache_dir) -> dict[str, Any]:
    """The sections (and training renderings) with the features of recipe ``method``."""
    sections = load_sections(data_dir=data_dir, cache_dir=cache_dir, recipe=method, augmented=True)
    if "X_fourier" in METHODS[method].get("use_rep", ()):  # patch FFT: only when read
        from ..pp import fourier_features

        for sdata in sections.values():
            fourier_features(sdata, patch_um=112.0, progress=False)
    return sections


def recipe_folds(protocol: str, sections: dict[str, Any]) -> list[tuple[str, list[str], list[str]]]:
    """The folds of a named protocol over the HER2ST sections, each training on its sections' renderings
    too (``"{name}@{mpp}"`` in ``sections``); held-out sections are only ever the originals."""
    from .._protocols import protocol_folds

    patients = {name: name[0] for name in HER2ST6 if name in sections}
    return [
        (fold, with_renderings(train, sections), test)
        for fold, train, test in protocol_folds(protocol, patients)
    ]


def describe_features(recipe: dict[str, Any]) -> str:
    if recipe["method"] == "stnet":
        return f"image, {recipe['patch_um']:g} um"
    reps = [recipe["use_rep"]] if isinstance(recipe["use_rep"], str) else recipe["use_rep"]
    described = " + ".join(rep.removeprefix("X_lite0_") for rep in reps)
    if recipe.get("center"):
        described += ", centred per section"
    if recipe.get("working_mpp"):
        described += f", rendered at {recipe['working_mpp']:g} um/px"
    if recipe.get("augment_mpp"):
        described += f", trained on scans at {'/'.join(f'{m:g}' for m in recipe['augment_mpp'])} um/px too"
    return described


def per_gene_figure(results: dict[str, Any], path: Path) -> Path:
    """Box plots of per-gene Pearson on held-out sections, per method and panel."""
    import matplotlib.pyplot as plt

    panels = sorted({p for cv in results.values() for p in cv.scores["panel"].unique()})
    fig, axes = plt.subplots(1, len(panels), figsize=(4 + 2.2 * len(results), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        data, labels = [], []
        for method, cv in results.items():
            scores = cv.scores
            values = scores[(scores["panel"] == panel) & (scores["metric"] == "pearson")]["value"].dropna()
            data.append(values.to_numpy())
            labels.append(method)
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(f"{panel}: per-gene Pearson (held-out sections)")
        ax.set_ylabel("Pearson r")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def bench_accuracy(
    methods: Sequence[str] = ("ridge", "ridge_multiscale_context", "histospace", "hist_multiscale", "stnet"),
    protocols: Sequence[str] = ("her2st6-loso", "her2st-cross-patient"),
    *,
    data_dir: str | Path | None = None,
    out_dir: str | Path = "bench_output",
    cache_dir: str | Path | None = None,
    panels: dict[str, tuple[str, int]] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Cross-validate each recipe of :data:`METHODS` under each protocol; write ``accuracy.json``,
    ``accuracy.md`` and figures.

    Rows: method x protocol x fold group x panel, with mean Pearson per gene, Spearman, MAE, per-spot
    Pearson, tumor AUC, train and predict seconds per fold, parameter count and the epoch budget.
    The reference numbers of docs/protocols.md (ridge on lite0) are stated beside them.
    """
    from ..tl import cross_validate

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        msg = f"No benchmark recipe for methods {unknown}; known: {list(METHODS)}."
        raise ValueError(msg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, per_protocol = [], {}
    for protocol in protocols:
        per_protocol[protocol] = {}
        for method in methods:
            recipe = dict(METHODS[method])
            sections = _recipe_sections(method, data_dir=data_dir, cache_dir=cache_dir or out / "cache")
            logger.info("bench accuracy: %s under %s", method, protocol)
            cv = cross_validate(
                sections,
                protocol=recipe_folds(protocol, sections),
                panels=panels,
                seed=seed,
                **fit_options(method),
            )
            per_protocol[protocol][method] = cv
            # LOSO is reported as its mean over folds; the cross-patient folds (C->B4, B4->C) one by one
            group = "mean of 6 folds" if protocol == "her2st6-loso" else cv.folds["fold"]
            folds = cv.folds.assign(group=group)
            for (group, panel), frame in folds.groupby(["group", "panel"], sort=False):
                by_fold = (
                    frame.drop(columns=["held_out", "group"])
                    .groupby("fold", sort=False)
                    .mean(numeric_only=True)
                )
                rows.append(
                    {
                        "method": method,
                        "protocol": protocol,
                        "folds": group,
                        "panel": panel,
                        "pearson": by_fold["pearson"].mean(),
                        "spearman": by_fold["spearman"].mean(),
                        "mae": by_fold["mae"].mean(),
                        "spot_pearson": by_fold["spot_pearson"].mean(),
                        "tumor_auc": by_fold["tumor_auc"].mean(),
                        "train_s_per_fold": by_fold["train_seconds"].mean(),
                        "predict_s_per_fold": by_fold["predict_seconds"].mean(),
                        "n_parameters": int(by_fold["n_parameters"].mean()),
                        "max_epochs": recipe.get("max_epochs", "-"),
                        "features": describe_features(recipe),
                        "reference_pearson": REFERENCE.get(
                            "her2st6-loso" if group == "mean of 6 folds" else group, {}
                        ).get(panel, np.nan),
                    }
                )
        per_gene_figure(per_protocol[protocol], out / f"accuracy_{protocol}.png")
    table = pd.DataFrame(rows)
    notes = [
        "Data: HER2ST sections B4 (patient B), C2-C6 (patient C); targets = log-normalised X; genes shared by all "
        "six sections; panels (top250mean, top50var) chosen on the training sections of each fold.",
        "Features: frozen lite0 (ImageNet EfficientNet-Lite0) of 56/112/224 um patches resampled to 224 px.",
        "pearson = mean over genes of the per-gene Pearson on the held-out section(s), then over folds; "
        "tumor_auc = AUC of the predicted tumor_score against the data authors' cancer clusters.",
        "reference_pearson = ridge on lite0 112 um features as measured for docs/protocols.md.",
        "Neural methods: CPU, early stopping on a held-out training section, at most max_epochs epochs.",
    ]
    write_report("accuracy", table, out_dir=out, title="Prediction accuracy on HER2ST", notes=notes)
    return table
