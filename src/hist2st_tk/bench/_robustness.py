"""``hist2st bench robustness``: a held-out section imaged differently, against the same section as scanned.

Each fold fits the default model's recipe on its training sections, then predicts the held-out
section(s) as scanned and under named perturbations (:func:`hist2st_tk.pp.perturb`): coarser pixels,
JPEG compression, a stain shift, blur. Every prediction goes through the one call a user makes,
``ht.tl.predict_expression(sdata, model)``, which computes the features from the perturbed pixels.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._files import atomic_write
from .._logging import logger
from .._protocols import HER2ST6, PANELS, protocol_folds
from ._accuracy import DEFAULT_RECIPE, METHODS, describe_features, fit_recipe, load_sections
from ._report import write_report

#: Named perturbations of a held-out section: keyword arguments of :func:`hist2st_tk.pp.perturb`.
PERTURBATIONS: dict[str, dict[str, Any]] = {
    "1 um/px": {"mpp": 1.0},
    "2 um/px": {"mpp": 2.0},
    "3.2 um/px": {"mpp": 3.2},
    "4 um/px": {"mpp": 4.0},
    "JPEG q40": {"jpeg_quality": 40},
    "stain shift (HED 0.05)": {"stain_jitter": 0.05, "seed": 0},
    "blur 2 um": {"blur_um": 2.0},
}

#: The folds of ``her2st-cross-patient``: name -> (training sections, held-out sections).
FOLDS: dict[str, tuple[list[str], list[str]]] = {
    name: (train, test)
    for name, train, test in protocol_folds("her2st-cross-patient", {s: s[0] for s in HER2ST6})
}
KEY = "predicted"


def bench_robustness(
    folds: Sequence[str] = tuple(FOLDS),
    perturbations: Sequence[str] = tuple(PERTURBATIONS),
    *,
    recipe: str = DEFAULT_RECIPE,
    data_dir: str | Path | None = None,
    out_dir: str | Path = "bench_output",
    cache_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Accuracy of ``recipe`` on held-out sections as scanned and under each perturbation, with ratios.

    Writes ``robustness.json``, ``robustness.md`` and ``robustness.png`` into ``out_dir``; returns the
    table: one row per fold, perturbation and panel, with the mean per-gene Pearson, the AUC of the
    model's tumor head and of the marker signature on its predictions, the median novelty and the
    fraction of spots out of distribution, each beside its ratio to the unperturbed section.
    """
    for name, known in (("folds", FOLDS), ("perturbations", PERTURBATIONS)):
        unknown = [x for x in (folds if name == "folds" else perturbations) if x not in known]
        if unknown:
            msg = f"Unknown {name} {unknown}; known: {list(known)}."
            raise ValueError(msg)
    out = Path(out_dir)
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    sections = load_sections(data_dir=data_dir, cache_dir=cache, recipe=recipe, augmented=True)
    rows = []
    conditions = ("as scanned", *perturbations)
    for fold in folds:
        train, test = FOLDS[fold]
        model, panels = fit_recipe(sections, train, recipe=recipe)
        scores: dict[str, list] = {condition: [] for condition in conditions}
        for name in test:
            for condition in conditions:
                logger.info("bench robustness: %s, %s, %s", fold, name, condition)
                sdata = sections[name]
                if condition != "as scanned":
                    sdata = _perturbed(sdata, condition, cache / "perturbed" / recipe)
                scores[condition].append(_scores(sdata, model, panels))
        for condition in conditions:
            for panel in panels:
                mean = pd.DataFrame([s[panel] for s in scores[condition]]).mean()
                rows.append({"fold": fold, "condition": condition, "panel": panel, **mean.to_dict()})
    table = _with_ratios(pd.DataFrame(rows))
    figure(table, out / "robustness.png")
    notes = [
        f"Recipe: {recipe} ({describe_features(METHODS[recipe])}), fitted on the training sections of each fold; gene panels "
        "chosen on them (top250mean, top50var) and scored from one model predicting their union plus the "
        "tumor signature's markers.",
        "Held-out section(s) as scanned (0.69 um/px JPEG) and perturbed by ht.pp.perturb; features computed "
        "from the perturbed pixels by ht.tl.predict_expression; B4->C rows are means over C2-C6.",
        "pearson = mean per-gene Pearson; tumor_auc = model's tumor head; signature_auc = marker signature "
        "(ht.tl.tumor_regions) on the predictions; labels = the data authors' cancer clusters. "
        "*_ratio = perturbed / as scanned (goal >= 0.9).",
        "Recipes were chosen on C2-C6 folds; the C->B4 rows are the honest held-out test.",
    ]
    write_report(
        "robustness", table, out_dir=out, title="Robustness to imaging: HER2ST held-out sections", notes=notes
    )
    return table


def _perturbed(sdata, condition: str, cache: Path):
    """The perturbed section, with its features cached (``{sample}__{condition}.json`` + ``.npz``; the
    ``.npz``, written last and atomically, marks a complete entry)."""
    from ..pp import perturb

    perturbed = perturb(sdata, **PERTURBATIONS[condition])
    table = perturbed["table"]
    stem = cache / f"{table.obs['sample'].iloc[0]}__{condition.replace('/', '_').replace(' ', '_')}"
    if stem.with_suffix(".npz").exists():
        arrays = np.load(stem.with_suffix(".npz"))
        params = json.loads(stem.with_suffix(".json").read_text())
        for key in arrays.files:
            table.obsm[key] = arrays[key]
            table.uns[key] = params[key]
    perturbed.attrs["bench_cache"] = str(stem)
    return perturbed


def _save_features(sdata, model) -> None:
    stem = sdata.attrs.get("bench_cache")
    if stem is None:
        return
    table = sdata["table"]
    keys = [k for k in model.use_rep if k in table.obsm and "aggregated_from" not in model.inputs.get(k, {})]
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    params = {k: json.loads(json.dumps(table.uns[k], default=_plain)) for k in keys}
    atomic_write(Path(stem).with_suffix(".json"), json.dumps(params).encode())
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(table.obsm[k]) for k in keys})
    atomic_write(Path(stem).with_suffix(".npz"), buffer.getvalue())


def _plain(value):
    return value.item() if hasattr(value, "item") else str(value)


def _scores(sdata, model, panels: dict[str, pd.Index]) -> dict[str, dict[str, float]]:
    """Per panel: mean per-gene Pearson, tumor AUCs and novelty of the model's predictions on ``sdata``."""
    from .. import tl

    tl.predict_expression(sdata, model, key_added=KEY, progress=False)
    _save_features(sdata, model)
    obs = sdata["table"].obs
    tumor_auc = tl.tumor_score_auc(sdata, label_key="tumor") if "tumor_score" in obs else np.nan
    tl.tumor_regions(sdata, key=KEY, key_added="signature_tumor")
    signature_auc = tl.tumor_score_auc(sdata, label_key="tumor", score_key="signature_tumor_score")
    novelty = sdata["table"].uns[KEY].get("novelty", {})
    result = {}
    for panel, genes in panels.items():
        summary = tl.evaluate(sdata, key=KEY, genes=list(genes))
        result[panel] = {
            "pearson": summary["pearson"],
            "tumor_auc": tumor_auc,
            "signature_auc": signature_auc,
            "novelty_median": novelty.get("median", np.nan),
            "fraction_ood": novelty.get("fraction_out_of_distribution", np.nan),
        }
    return result


def _with_ratios(table: pd.DataFrame) -> pd.DataFrame:
    base = table[table["condition"] == "as scanned"].set_index(["fold", "panel"])
    for metric in ("pearson", "tumor_auc", "signature_auc"):
        reference = base[metric].reindex(pd.MultiIndex.from_frame(table[["fold", "panel"]])).to_numpy()
        position = table.columns.get_loc(metric) + 1
        with np.errstate(invalid="ignore", divide="ignore"):  # no reference (NaN AUC): no ratio
            table.insert(position, f"{metric}_ratio", table[metric].to_numpy() / reference)
    return table


def figure(table: pd.DataFrame, path: Path) -> Path:
    """Per fold: the Pearson ratio (top250mean) and the tumor AUCs of every condition."""
    import matplotlib.pyplot as plt

    folds = list(dict.fromkeys(table["fold"]))
    fig, axes = plt.subplots(1, len(folds), figsize=(6 * len(folds), 4.2), squeeze=False)
    panel = next(iter(PANELS))
    for ax, fold in zip(axes[0], folds, strict=True):
        rows = table[(table["fold"] == fold) & (table["panel"] == panel)]
        x = np.arange(len(rows))
        ax.bar(x - 0.27, rows["pearson_ratio"], width=0.27, label="Pearson, ratio to as scanned")
        ax.bar(x, rows["tumor_auc"], width=0.27, label="tumor AUC (model head)")
        ax.bar(x + 0.27, rows["signature_auc"], width=0.27, label="tumor AUC (signature)")
        ax.axhline(0.9, color="grey", lw=0.8, ls="--")
        ax.set_xticks(x, rows["condition"], rotation=35, ha="right")
        ax.set_ylim(0, 1.3)
        ax.set_title(f"{fold} ({panel}; dashed: goal 0.9)")
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
