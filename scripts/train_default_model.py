"""Train the default model shipped inside hist2st_tk, and write its model card.

Run from the repository root (about 10 minutes on 2 CPU cores, most of it image features)::

    HIST2ST_TK_DATA=../shared/data python scripts/train_default_model.py

The model is the best recipe of ``hist2st bench accuracy`` that is small enough to ship: ridge on
frozen lite0 features of 56, 112 and 224 um patches plus the mean features of the spots within 300 um,
centred per section, fitted on all six HER2ST sections. The card's numbers are the same recipe under
the named protocols (each fold fitted without its held-out section).
"""

from __future__ import annotations

import argparse

import pandas as pd

import hist2st_tk as ht
from hist2st_tk.bench._accuracy import DEFAULT_RECIPE, METHODS, load_sections
from hist2st_tk.bench._report import markdown_table
from hist2st_tk.models._default import DEFAULT_MODEL_DIR

RECIPE = METHODS[DEFAULT_RECIPE]
PROTOCOLS = ("her2st6-loso", "her2st-cross-patient")


def protocol_table(sections) -> pd.DataFrame:
    """Mean per-gene Pearson (and tumor AUC) of the recipe under each protocol, per panel."""
    rows = []
    for protocol in PROTOCOLS:
        cv = ht.tl.cross_validate(sections, protocol=protocol, **RECIPE)
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


def card(model, numbers: pd.DataFrame) -> str:
    table = markdown_table(numbers)
    return f"""# hist2st_tk default model: HER2ST ridge (multi-scale + context)

**What it predicts.** Log-normalised expression (`normalize_total` to 10,000, then `log1p`) of
{len(model.genes)} genes (the highest mean expression over the training spots; the list is in
`model.json`) from H&E, per spot, plus a tumor probability (`obs["tumor_score"]`).

**Training data.** The six HER2ST sections with full-resolution H&E (B4 of patient B; C2-C6 of patient
C; {sum(1 for _ in model.trained_on)} sections, legacy ST, 100 um spots on a 200 um grid): Andersson, A.
et al. *Spatial deconvolution of HER2-positive breast cancer delineates tumor-associated cell type
interactions.* Nature Communications 12, 6012 (2021). Tumor labels: the data authors' region labels.

**Inputs.** Frozen ImageNet EfficientNet-Lite0 (`lite0`) features of 56, 112 and 224 um patches around
each spot, and the mean 112 and 224 um features of the spots within 300 um; every feature is centred on
its section's mean. `ht.pp.model_features(sdata)` computes them on any section with a known microns per
pixel; then `ht.tl.predict_expression(sdata)`.

**Model.** StandardScaler, PCA (256 components) and ridge regression (penalty by leave-one-out on the
training spots); the tumor head is a logistic regression on the same components. Trained by
`scripts/train_default_model.py` (seed {model.seed}), hist2st_tk {model.config()["package_version"]}.

**How well the recipe does** (mean per-gene Pearson on held-out sections, each fold fitted without
them; panels chosen on the training sections of each fold; tumor AUC of the tumor head):

{table}

Reference (DESIGN.md §6, ridge on 112 um lite0 features): her2st6-loso 0.177 / 0.229
(top250mean / top50var), C->B4 0.138 / 0.121, B4->C 0.070 / 0.082.

**Intended use.** Research on HER2-positive breast cancer H&E at about 0.5-1 um per pixel: exploring
predicted expression patterns, tumor regions and patient-level summaries. Not for diagnosis.

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
    args = parser.parse_args()
    sections = load_sections(data_dir=args.data_dir, cache_dir=args.cache)
    numbers = protocol_table(sections)
    print(numbers.to_string(index=False))
    model = ht.tl.fit_predictor(list(sections.values()), genes=250, **RECIPE)
    out = model.save(args.out, overwrite=True)
    (out / "MODEL_CARD.md").write_text(card(model, numbers))
    print(f"Model and card written to {out}")


if __name__ == "__main__":
    main()
