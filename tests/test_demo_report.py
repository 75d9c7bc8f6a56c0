"""The demo report's pieces, built from small synthetic sections (the full demo takes 20+ minutes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hist2st_tk as ht
from hist2st_tk import _demo, _demo_report
from hist2st_tk._demo import KEY, within_section_zscores
from hist2st_tk._demo_report import expression_levels, region_scores
from hist2st_tk._markdown import format_pvalue, markdown_table
from hist2st_tk.tl._cross_validate import CrossValidation


def _section(seed: int, sample: str, patient: str):
    """A synthetic section whose predictions follow the measured pattern at a level 2 higher."""
    sdata = ht.datasets.synthetic(n_spots=49, n_genes=5, seed=seed, sample=sample, patient=patient)
    table = sdata["table"]
    rng = np.random.default_rng(seed)
    measured = table.to_df()
    table.obsm[KEY] = measured + 2.0 + rng.normal(scale=0.1, size=measured.shape)
    colour = table.obs["latent_colour"].to_numpy()
    table.obs["region_label"] = pd.Categorical(
        np.where(colour > 0.5, "cancer 1", np.where(colour > 0.25, "adipose", "immune"))
    )
    return sdata


@pytest.fixture
def sections():
    return {name: _section(i, name, name[0]) for i, name in enumerate(["B4", "C2", "C3"])}


# -- p-values -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "text"),
    [
        (0.0, "< 1e-300"),
        (np.float64(0.0), "< 1e-300"),
        (5e-310, "< 1e-300"),
        (1e-300, "1.0e-300"),
        (3.21e-05, "3.2e-05"),
        (0.000999, "1.0e-03"),
        (0.0321, "0.032"),
        (0.5, "0.5"),
        (1.0, "1"),
        (float("nan"), "NaN"),
        (pd.NA, "NaN"),
    ],
)
def test_format_pvalue(p, text):
    assert format_pvalue(p) == text


def test_format_pvalue_bad_input():
    with pytest.raises(ValueError, match=r"lies in \[0, 1\], got -0.1"):
        format_pvalue(-0.1)
    with pytest.raises(ValueError, match=r"lies in \[0, 1\], got 1.5"):
        format_pvalue(1.5)
    with pytest.raises(TypeError, match="must be a number, got 'small'"):
        format_pvalue("small")


def test_markdown_table_formats_pvalues_in_every_table():
    table = pd.DataFrame(
        {
            "gene": ["A", "B"],
            "effect_size": [199.123, 0.5],
            "pvalue": [0.0, 3.21e-5],
            "pvalue_adj": [1e-320, 0.04],
        }
    )
    assert markdown_table(table).splitlines()[2:] == [
        "| A | 199 | < 1e-300 | < 1e-300 |",
        "| B | 0.5 | 3.2e-05 | 0.04 |",
    ]
    # other p-value columns when named; the others then print as plain floats
    named = markdown_table(table.rename(columns={"pvalue": "p"}), pvalues=["p"]).splitlines()
    assert named[2] == "| A | 199 | < 1e-300 | 1e-320 |"
    with pytest.raises(ValueError, match=r"`pvalues` names columns the table lacks: \['q'\]"):
        markdown_table(table, pvalues=["q"])


# -- z-scores, levels, regions --------------------------------------------------------------------


def test_within_section_zscores_have_mean_0_and_sd_1_per_gene():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(loc=4.4, scale=0.3, size=(50, 3)), columns=["ERBB2", "KRT8", "DCN"])
    frame["FLAT"] = 1.8
    z = within_section_zscores(frame)
    assert list(z.columns) == list(frame.columns) and (z.index == frame.index).all()
    np.testing.assert_allclose(z[["ERBB2", "KRT8", "DCN"]].mean(), 0, atol=1e-12)
    np.testing.assert_allclose(z[["ERBB2", "KRT8", "DCN"]].std(ddof=0), 1)
    assert z["FLAT"].isna().all()  # a constant gene has no pattern
    # a level and scale change leaves the z-scores as they were
    pd.testing.assert_frame_equal(within_section_zscores(3 * frame + 2), z)
    frame.iloc[0, 0] = np.nan
    assert np.isnan(within_section_zscores(frame).iloc[0, 0])
    assert within_section_zscores(frame)["ERBB2"].mean() == pytest.approx(0, abs=1e-12)


def test_within_section_zscores_bad_input():
    with pytest.raises(TypeError, match="must be a DataFrame of spots x genes, got ndarray"):
        within_section_zscores(np.zeros((3, 2)))
    with pytest.raises(TypeError, match=r"non-numeric columns: \['label'\]"):
        within_section_zscores(pd.DataFrame({"ERBB2": [1.0, 2.0], "label": ["a", "b"]}))
    with pytest.raises(TypeError, match=r"non-numeric columns: \['tumor'\]"):
        within_section_zscores(pd.DataFrame({"ERBB2": [1.0, 2.0], "tumor": [True, False]}))


def test_zscore_columns_predicted_beside_measured(sections):
    table = sections["B4"]["table"]
    genes = list(table.var_names[:2])
    columns = _demo._add_zscore_columns(table, genes)
    g0, g1 = genes
    assert columns == [
        f"{g0}_predicted_z_score",
        f"{g0}_measured_z_score",
        f"{g1}_predicted_z_score",
        f"{g1}_measured_z_score",
    ]
    np.testing.assert_allclose(table.obs[columns].mean(), 0, atol=1e-12)
    np.testing.assert_allclose(table.obs[columns].std(ddof=0), 1)
    # the level shift of 2 is gone: predicted and measured z-scores nearly agree
    assert np.abs(table.obs[columns[0]] - table.obs[columns[1]]).max() < 0.5


def test_expression_levels(sections):
    table = sections["B4"]["table"]
    ht.tl.evaluate(sections["B4"], key=KEY)
    genes = list(table.var_names[:2])
    levels = expression_levels(table, genes)
    assert list(levels.columns) == ["gene", "predicted mean", "measured mean", "pearson"]
    np.testing.assert_allclose(levels["predicted mean"] - levels["measured mean"], 2, atol=0.05)
    assert (levels["pearson"] > 0.9).all()
    with pytest.raises(ValueError, match=r"not both: \['ERBB2'\]"):
        expression_levels(table, ["ERBB2"])
    with pytest.raises(ValueError, match="must be predicted and measured genes; got \\[\\]"):
        expression_levels(table, [])


def test_region_scores_mean_per_region():
    obs = pd.DataFrame(
        {
            "region_label": pd.Categorical(["cancer", "cancer", "adipose", "adipose", "unknown", None]),
            "tumor": pd.array([True, True, False, False, pd.NA, pd.NA], dtype="boolean"),
            "tumor_score": [0.9, 0.7, 0.6, 0.8, 0.1, 0.5],
            "other": [0.0, 0.0, 1.0, 1.0, 0.0, 0.0],
        }
    )
    table = region_scores(obs, {"head": "tumor_score", "signature": "other"})
    assert list(table.columns) == ["region", "tumor label", "spots", "head", "signature"]
    assert list(table["region"]) == [
        "cancer",
        "adipose",
        "unknown",
    ]  # highest score first; no-region spot out
    assert list(table["tumor label"]) == ["True", "False", "unknown"]
    assert list(table["spots"]) == [2, 2, 1]
    np.testing.assert_allclose(table["head"], [0.8, 0.7, 0.1])


def test_region_scores_bad_input():
    obs = pd.DataFrame({"region_label": ["a"], "tumor": [True], "tumor_score": [0.5], "flag": [True]})
    with pytest.raises(ValueError, match="`scores` must name at least one score column"):
        region_scores(obs, {})
    with pytest.raises(KeyError, match=r"No obs\['nope'\]"):
        region_scores(obs, {"x": "nope"})
    with pytest.raises(KeyError, match=r"No obs\['region'\]"):
        region_scores(obs, {"x": "tumor_score"}, label_key="region")
    with pytest.raises(TypeError, match=r"must be numeric, not \['flag \(bool\)'\]"):
        region_scores(obs, {"x": "flag"})


# -- the report -----------------------------------------------------------------------------------


def _cv(aucs: dict[str, float]) -> CrossValidation:
    rows = [
        {"fold": name, "held_out": name, "panel": panel, "pearson": 0.3, "spearman": 0.3, "mae": 1.0,
         "mse": 1.5, "r2": -1.0, "spot_pearson": 0.9, "tumor_auc": auc}
        for name, auc in aucs.items() for panel in ("top250mean", "top50var")
    ]  # fmt: skip
    return CrossValidation(
        scores=pd.DataFrame(), folds=pd.DataFrame(rows), predictions={n: {} for n in aucs}, annotations={},
        protocol="leave-one-section-out",
    )  # fmt: skip


def _report(sections, pooled) -> str:
    test = sections["B4"]
    table = test["table"]
    metrics = ht.tl.evaluate(test, key=KEY)
    ht.tl.tumor_regions(test, key=KEY, signature=[table.var_names[0]], key_added="tumor_predicted")
    table.obs["tumor_score"] = table.obs["tumor_predicted_score"]
    regions = ht.tl.compare_regions(test, groupby="tumor_predicted", key=KEY)
    regions.loc[regions.index[0], "pvalue_adj"] = 0.0  # as a p-value below float precision would print
    genes = _demo._shown_genes(table)
    return _demo_report.build_report(
        test_section="B4",
        train=["C2", "C3"],
        metrics=metrics,
        levels=expression_levels(table, genes),
        cv=_cv({"B4": 0.672, "C2": 0.9, "C3": 0.94}),
        clusters={"ari": 0.2, "nmi": 0.3, "n_majority": 30, "n_spots": 49},
        aucs={"tumor head": 0.672, "marker signature": 0.67},
        region_table=region_scores(table.obs, {"tumor head score (tumor map)": "tumor_score"}),
        regions=regions,
        pooled=pooled,
        patients=pd.DataFrame({"sample": ["B4"], "ERBB2": [1.0]}),
        figures={"Z": "expression_z.png", "Tumor score and the authors' labels": "tumor_map.png"},
        timings=[("fit", 1.0)],
    )


def test_report_explains_levels_aucs_labels_and_the_pooled_test(sections):
    pooled = ht.tl.compare_regions(sections, groupby="tumor", key=KEY)  # patients B and C: two units
    report = _report(sections, pooled)
    # 1. levels against patterns
    assert (
        "Absolute levels differ from the measured ones because the model predicts at the level of its "
        "training sections (C2, C3) and B4 comes from another patient (B; training: C) and another library: "
        "r2 and MAE score the level, so they are poor, while Pearson's r (per gene, across spots) and the "
        "z-score maps (each gene standardised within the section) score the pattern within the slide."
    ) in report
    assert "| gene | predicted mean | measured mean | pearson |" in report
    assert "![Z](expression_z.png)\n\nEach gene's predicted and measured values standardised" in report
    # 2. the pooled test of two patients is no finding; p-values below float precision say so
    assert "with 2 patients, fewer than 3, the pooled test is not interpretable" in report
    assert "no pooled gene is reported as a finding" in report
    assert "n_units" not in report and "paired t (" not in report
    assert "< 1e-300" in report and "| 0 |" not in report
    # 3. where each tumor AUC comes from
    assert "`tumor_auc` here is the mean over the 3 held-out sections of each section's own AUC" in report
    assert "B4's own fold here gives 0.672" in report
    assert "2 of the 3 held-out sections (C2, C3) share their patient" in report
    assert "| B4 | C2, C3 | 0.672 |" in report and "| 0.837 |" in report  # mean of 0.672, 0.9, 0.94
    assert (
        "Both AUCs are of B4 alone, predicted by the main fit of section 1 (trained on C2, C3). The "
        "`tumor_auc` of section 2 (0.837) is instead the mean of the 3 held-out sections' own AUCs under "
        "cross-validation, B4's fold giving 0.672"
    ) in report
    # 4. what the labels are, and the mean score per region beside the AUCs
    labels = "are the data authors' regions, not a pathologist's"
    assert report.count(labels) == 2  # in section 4 and under the tumor map
    section4 = report[report.index("## 4.") : report.index("Top genes")]
    assert "| region | tumor label | spots | tumor head score (tumor map) |" in section4
    assert "| cancer 1 | True |" in section4 or "| cancer 1 | False |" in section4


def test_report_prints_an_interpretable_pooled_test(sections):
    three = {name: _section(i, name, f"p{i}") for i, name in enumerate(["B4", "C2", "C3"])}
    pooled = ht.tl.compare_regions(three, groupby="tumor", key=KEY)
    report = _report(sections, pooled)
    assert "units = patients:" in report and "not interpretable" not in report
    assert "| gene | log_fold_change | effect_size | pvalue | pvalue_adj | n_units |" in report


def test_tumor_scores_by_region_reads_the_scores_the_section_has():
    obs = pd.DataFrame(
        {"region_label": ["a", "b"], "tumor": [True, False], "tumor_predicted_score": [0.2, 0.9]}
    )
    table = _demo_report.tumor_scores_by_region(obs)
    assert list(table.columns) == ["region", "tumor label", "spots", "marker signature score"]
    assert list(table["region"]) == ["b", "a"]
