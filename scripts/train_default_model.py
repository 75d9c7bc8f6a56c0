"""Train the default model shipped inside hist2st_tk, and write its model card.

Run from the repository root (about 20 minutes on 2 CPU cores, most of it image features)::

    HIST2ST_TK_DATA=../shared/data/her2st python scripts/train_default_model.py \
        --robustness bench_output/robustness.json

The model is the recipe :data:`hist2st_tk.bench._accuracy.DEFAULT_RECIPE`, chosen on the C2-C6 folds
(docs/robustness.md): ridge on frozen lite0 features of 56, 112 and 224 um patches plus the mean
features of the spots within 300 um, centred per section, trained on every section as scanned and as a
4 um/px scanner would have imaged it; its tumor head reads the marker signature of its predictions. The
card's numbers are the same recipe under the named protocols (each fold fitted without its held-out
section) and, with ``--robustness``, the table of ``hist2st bench robustness``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

import hist2st_tk as ht
from hist2st_tk._markdown import markdown_table
from hist2st_tk.bench._accuracy import DEFAULT_RECIPE, load_sections, recipe_folds
from hist2st_tk.models._default import DEFAULT_MODEL_DIR

RECIPE = ht.models.fit_options(ht.models.DEFAULT_RECIPE)
PROTOCOLS = ("her2st6-loso", "her2st-cross-patient")
#: Microns per pixel the model is meant for: any scan at least as fine as 4 um/px; finer than the
#: training scans (0.69 um/px) they are rendered at 0.7 um/px, so 0.25 um/px (40x) gives the same input.
VALIDATED_MPP = (0.25, 4.0)


def protocol_table(sections) -> pd.DataFrame:
    """Mean per-gene Pearson (and tumor AUC) of the recipe under each protocol, per panel."""
    rows = []
    for protocol in PROTOCOLS:
        cv = ht.tl.cross_validate(sections, protocol=recipe_folds(protocol, sections), **RECIPE)
        folds = cv.folds.assign(group="mean of 6 folds" if protocol == "her2st6-loso" else cv.folds["fold"])
        for (group, panel), frame in folds.groupby(["group", "panel"], sort=False):
            per_fold = frame.groupby("fold", sort=False).mean(numeric_only=True)
            rows.append(
                {
                    "protocol": protocol,
                    "folds": group,
                    "panel": panel,
                    "pearson": round(per_fold["pearson"].mean(), 3),
                    "spot_pearson": round(per_fold["spot_pearson"].mean(), 3),
                    "tumor_auc": round(per_fold["tumor_auc"].mean(), 3),
                }
            )
    return pd.DataFrame(rows)


def robustness_table(path: str | None) -> str:
    """The top250mean rows of ``hist2st bench robustness`` (its JSON), as Markdown; empty without one."""
    if path is None:
        return "(run `hist2st bench robustness` and pass its JSON with `--robustness`)"
    rows = pd.DataFrame(json.loads(Path(path).read_text())["rows"])
    rows = rows[rows["panel"] == "top250mean"]
    columns = ["fold", "condition", "pearson", "pearson_ratio", "tumor_auc", "tumor_auc_ratio"]
    return markdown_table(rows[columns].round(3))


def card(model, numbers: pd.DataFrame, robustness: str) -> str:
    table = markdown_table(numbers)
    return f"""# hist2st_tk default model: HER2ST ridge (multi-scale + context, multi-resolution)

**What it predicts.** Log-normalised expression (`normalize_total` to 10,000, then `log1p`) of
{len(model.genes)} genes (the 250 of highest mean expression over the training spots, plus the markers of
the tumor signature of `ht.tl.tumor_regions` measured in all training sections; the list is in
`model.json`) from H&E, per spot, plus a tumor probability (`obs["tumor_score"]`) and a per-spot
novelty (`obs["predicted_ridge_novelty"]`: how unlike the training spots the image looks).

**Training data.** The six HER2ST sections with full-resolution H&E (B4 of patient B; C2-C6 of patient
C; {sum(1 for _ in model.trained_on)} sections, legacy ST, 100 um spots on a 200 um grid): Andersson, A.
et al. *Spatial deconvolution of HER2-positive breast cancer delineates tumor-associated cell type
interactions.* Nature Communications 12, 6012 (2021). Tumor labels: the data authors' region labels.

**Inputs.** Frozen ImageNet EfficientNet-Lite0 (`lite0`) features of 56, 112 and 224 um patches around
each spot, and the mean 112 and 224 um features of the spots within 300 um; every feature is centred on
its section's mean. Patches of scans finer than 0.7 um/px are rendered at 0.7 um/px (the training scans'
resolution). `ht.tl.predict_expression(sdata)` computes them on any section with a known microns per pixel.

**Model.** StandardScaler, PCA (256 components) and ridge regression (penalty by leave-one-out on the
training spots), fitted on every training section as scanned (0.69 um/px) and as a 4 um/px scanner would
have imaged it (`ht.pp.perturb`), so that scans from 0.25 to 4 um/px are in its range. The tumor head is
a logistic regression on the marker signature (tumor minus stroma/immune/fat markers, z-scored within
the section) of its own predictions. Trained by `scripts/train_default_model.py` (seed {model.seed}),
hist2st_tk {model.config()["package_version"]}.

**How well the recipe does** (mean per-gene Pearson on held-out sections, each fold fitted without
them; panels chosen on the training sections of each fold; tumor AUC of the tumor head):

{table}

Reference (ridge on 112 um lite0 features, see docs/benchmarks.md): her2st6-loso 0.177 / 0.229
(top250mean / top50var), C->B4 0.138 / 0.121, B4->C 0.070 / 0.082. The first default model (the same
features, trained at 0.69 um/px only, tumor head on image components) scored her2st6-loso 0.227 / 0.328,
C->B4 0.165 / 0.153 and B4->C 0.076 / 0.103, tumor AUC C->B4 0.672: training on 4 um/px renderings too
costs about 0.03 on C->B4 at the training resolution and buys the coarse scans below.

**Robustness** (`hist2st bench robustness`: the recipe fitted on each cross-patient fold, the held-out
section(s) as scanned and perturbed by `ht.pp.perturb`; top250mean panel; the recipe was chosen on
C2-C6 folds, so the C->B4 rows are the honest test):

{robustness}

**Intended use.** Research on HER2-positive breast cancer H&E scanned at 0.25 to 4 um per pixel:
exploring predicted expression patterns, tumor regions and patient-level summaries. Not for diagnosis.
It warns when an image is blank, when its scale is outside that range, and when most spots look unlike
its training spots (novelty above 0.99).

**Limits.** Two patients only: generalisation to other patients, stains, scanners and cancer types is
weak (see the cross-patient rows). With section centring, a slide's average prediction is the
training sections' average: compare spots and regions within a slide, not absolute levels across
slides. Spot-level (100 um) targets: it does not resolve single cells.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder holding the HER2ST section folders")
    parser.add_argument("--cache", default="bench_output/cache", help="feature cache (shared with bench)")
    parser.add_argument("--out", default=str(DEFAULT_MODEL_DIR), help="model directory to write")
    parser.add_argument("--robustness", default=None, help="robustness.json of `hist2st bench robustness`")
    parser.add_argument("--skip-protocols", action="store_true", help="fit only (no cross-validation table)")
    args = parser.parse_args()
    sections = load_sections(data_dir=args.data_dir, cache_dir=args.cache, recipe=DEFAULT_RECIPE, augmented=True)
    numbers = pd.DataFrame() if args.skip_protocols else protocol_table(sections)
    print(numbers.to_string(index=False))
    originals = [sections[name]["table"] for name in sections if "@" not in name]
    model = ht.tl.fit_predictor(list(sections.values()), genes=ht.models.default_panel(originals), **RECIPE)
    model.validated_mpp = VALIDATED_MPP
    out = model.save(args.out, overwrite=True)
    (out / "MODEL_CARD.md").write_text(card(model, numbers, robustness_table(args.robustness)))
    print(f"Model and card written to {out}")


if __name__ == "__main__":
    main()
