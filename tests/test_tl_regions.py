"""Tumor regions from predicted expression, tumor AUC, and the comparison of regions."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

import hist2st_tk as ht
from hist2st_tk._markers import NON_TUMOR_MARKERS, TUMOR_MARKERS
from hist2st_tk.tl._compare import COMPARE_COLUMNS

KEY = "predicted_test"


def _section(seed: int, sample: str, patient: str | None = None):
    """A synthetic section whose 'predictions' hold two tumor markers, one stromal marker and noise.

    The markers follow ``latent_colour``, which defines the section's ``obs["tumor"]`` labels; the measured
    genes are predicted too, so that :func:`ht.tl.evaluate` has something to score.
    """
    sdata = ht.datasets.synthetic(n_spots=64, n_genes=6, seed=seed, sample=sample, patient=patient)
    table = sdata["table"]
    rng = np.random.default_rng(seed)
    colour = table.obs["latent_colour"].to_numpy()
    noise = rng.normal(scale=0.1, size=(table.n_obs, 4))
    markers = pd.DataFrame(
        {
            "ERBB2": 2 * colour + noise[:, 0],
            "KRT8": colour + noise[:, 1],
            "COL1A1": 1 - colour + noise[:, 2],
            "NOISE": noise[:, 3],
        },
        index=table.obs_names,
    )
    table.obsm[KEY] = pd.concat([table.to_df(), markers], axis=1)
    return sdata


@pytest.fixture
def sections():
    return {f"s{i}": _section(i, f"s{i}", patient=f"p{i // 2}") for i in range(4)}


def test_signature_scores_the_tumor(sections, caplog):
    sdata = sections["s0"]
    obs = sdata["table"].obs
    obs["truth"] = obs["tumor"]
    obs["tumor_score"] = 0.0  # as a predictor that scores tumors would have written it
    with caplog.at_level(logging.INFO, logger="hist2st_tk"):
        score = ht.tl.tumor_regions(sdata)
    assert "replacing table.obs['tumor_score']" in caplog.text
    assert "skipped 'STARD3'" not in caplog.text and "GRB7" in caplog.text
    np.testing.assert_allclose(score.to_numpy(), obs["tumor_score"].to_numpy())
    assert ((score > 0) & (score < 1)).all()
    assert obs["tumor"].dtype == bool and (obs["tumor"] == (score >= 0.5)).all()
    params = sdata["table"].uns["tumor_regions"]["params"]
    assert params["method"] == "signature" and params["key"] == KEY
    assert params["used_positive"] == ["ERBB2", "KRT8"] and params["used_negative"] == ["COL1A1"]
    auc = ht.tl.tumor_score_auc(sdata, label_key="truth")
    assert auc > 0.9
    summary = ht.tl.evaluate(sdata, key=KEY, label_key="truth")
    assert summary["tumor_auc"] == auc and summary["n_genes"] == 6


def test_signature_as_a_list_and_threshold(sections):
    sdata = sections["s1"]
    score = ht.tl.tumor_regions(sdata, signature=["COL1A1"], threshold=0.9, key_added="stroma")
    obs = sdata["table"].obs
    z = sdata["table"].obsm[KEY]["COL1A1"]
    expected = 1 / (1 + np.exp(-(z - z.mean()) / z.std(ddof=0)))
    np.testing.assert_allclose(score.to_numpy(), expected.to_numpy())
    assert (obs["stroma"] == (score >= 0.9)).all() and obs["stroma"].sum() < len(obs) / 2
    assert "tumor" in obs and obs["tumor"].dtype == "boolean"  # the labels are kept


def test_classifier_scores_another_section(sections):
    model = ht.tl.fit_tumor_classifier([sections["s0"], sections["s1"]], key=KEY)
    assert isinstance(model, ht.tl.TumorClassifier) and model.trained_on == ["s0", "s1"]
    held_out = sections["s2"]
    held_out["table"].obs["truth"] = held_out["table"].obs["tumor"]
    ht.tl.tumor_regions(held_out, model=model)
    assert ht.tl.tumor_score_auc(held_out, label_key="truth") > 0.9
    params = held_out["table"].uns["tumor_regions"]["params"]
    assert params["method"] == "classifier" and params["trained_on"] == ["s0", "s1"]
    two = ht.tl.fit_tumor_classifier(sections["s0"], key=KEY, genes=["ERBB2", "COL1A1"])
    assert two.genes == ["ERBB2", "COL1A1"]
    assert two.predict_proba(held_out["table"].obsm[KEY][["COL1A1", "ERBB2"]]).shape == (64,)


def test_tumor_regions_bad_input_writes_nothing(sections):
    sdata = sections["s3"]
    table = sdata["table"]
    before = table.obs.copy()
    with pytest.raises(ValueError, match="None of the signature's positive genes"):
        ht.tl.tumor_regions(sdata, signature=["EPCAM", "CDH1"])
    with pytest.raises(ValueError, match=r"`threshold` must lie in \[0, 1\]"):
        ht.tl.tumor_regions(sdata, threshold=2)
    with pytest.raises(KeyError, match=r"No predictions obsm\['predicted_x'\].*'predicted_test'"):
        ht.tl.tumor_regions(sdata, key="predicted_x")
    model = ht.tl.fit_tumor_classifier(sections["s0"], key=KEY)
    table.obsm["predicted_small"] = table.obsm[KEY][["ERBB2"]]
    with pytest.raises(KeyError, match="ambiguous predictions: it has several"):
        ht.tl.tumor_regions(sdata)
    with pytest.raises(KeyError, match="are not predicted here"):
        ht.tl.tumor_regions(sdata, key="predicted_small", model=model)
    pd.testing.assert_frame_equal(table.obs, before)
    assert "tumor_regions" not in table.uns


def test_tumor_classifier_and_auc_bad_input(sections):
    sdata = sections["s0"]
    obs = sdata["table"].obs
    obs["all_tumor"] = True
    with pytest.raises(ValueError, match="one class only"):
        ht.tl.fit_tumor_classifier(sdata, label_key="all_tumor")
    with pytest.raises(KeyError, match="1 genes are not predicted in every training section: 'GRB7'"):
        ht.tl.fit_tumor_classifier(sdata, genes=["ERBB2", "GRB7"])
    with pytest.raises(KeyError, match=r"no label column obs\['nope'\]"):
        ht.tl.fit_tumor_classifier(sdata, label_key="nope")
    with pytest.raises(KeyError, match=r"has no obs\['tumor_score'\]: `ht.tl.tumor_regions\(sdata\)` writes it"):
        ht.tl.tumor_score_auc(sdata, label_key="tumor")
    obs["tumor_score"] = 0.5
    obs["words"] = "a"
    with pytest.raises(TypeError, match=r"obs\['words'\] .* must be boolean"):
        ht.tl.tumor_score_auc(sdata, label_key="words")
    assert np.isnan(ht.tl.tumor_score_auc(sdata, label_key="all_tumor"))


def test_compare_regions_per_section_and_pooled(sections):
    result = ht.tl.compare_regions(sections, groupby="tumor", key=KEY)
    assert list(result.columns) == list(COMPARE_COLUMNS)
    assert set(result["scope"]) == {"s0", "s1", "s2", "s3", "pooled"}
    erbb2 = result[result["gene"] == "ERBB2"].set_index("scope")
    assert (erbb2["group"] == "True").all() and (erbb2["reference"] == "False").all()
    assert (erbb2["log_fold_change"] > 0.5).all() and (erbb2["pvalue_adj"].drop("pooled") < 1e-3).all()
    pooled = result[result["scope"] == "pooled"].set_index("gene")
    assert (pooled["n_units"] == 2).all() and pooled["test"].iloc[0] == "paired t (patients)"
    assert pooled.loc["COL1A1", "log_fold_change"] < 0
    assert result.loc[result["scope"] != "pooled", "interpretable"].all()

    table = sections["s0"]["table"]
    tumor = table.obs["tumor"].to_numpy(dtype=bool)
    row = erbb2.loc["s0"]
    assert row["mean_group"] == pytest.approx(table.obsm[KEY]["ERBB2"][tumor].mean())
    assert row["n_units"] == tumor.sum()
    stored = table.uns["compare_regions"]["results"]
    assert set(stored["scope"]) == {"s0", "pooled"} and len(stored) == 2 * table.obsm[KEY].shape[1]

    # one patient: sections are the units
    one = ht.tl.compare_regions([sections["s0"], sections["s1"]], key=KEY)
    assert one.loc[one["scope"] == "pooled", "test"].iloc[0] == "paired t (sections)"


def test_pooled_test_of_two_patients_is_flagged_not_interpretable(sections, caplog):
    with caplog.at_level(logging.WARNING, logger="hist2st_tk"):
        result = ht.tl.compare_regions(sections, groupby="tumor", key=KEY)
    pooled = result[result["scope"] == "pooled"]
    assert result["interpretable"].dtype == bool
    assert (pooled["n_units"] == 2).all() and not pooled["interpretable"].any()
    # the paired t-test on two patients is not reported; the means and their difference are
    assert pooled[["effect_size", "statistic", "pvalue", "pvalue_adj"]].isna().all().all()
    assert pooled[["mean_group", "mean_reference", "log_fold_change"]].notna().all().all()
    assert "has 2 patients (fewer than 3): not interpretable" in caplog.text
    stored = sections["s0"]["table"].uns["compare_regions"]["results"]
    assert not stored.loc[stored["scope"] == "pooled", "interpretable"].any()


def test_pooled_test_of_three_patients_is_reported(caplog):
    sections = {f"s{i}": _section(i, f"s{i}", patient=f"p{i}") for i in range(3)}
    with caplog.at_level(logging.WARNING, logger="hist2st_tk"):
        result = ht.tl.compare_regions(sections, groupby="tumor", key=KEY)
    pooled = result[result["scope"] == "pooled"].set_index("gene")
    assert (pooled["n_units"] == 3).all() and pooled["interpretable"].all()
    assert "not interpretable" not in caplog.text
    # Cohen's d_z and the paired t-test on the three patients' mean differences
    from scipy.stats import ttest_rel

    tables = [sections[s]["table"] for s in sections]
    tumor = [t.obs["tumor"].to_numpy(dtype=bool) for t in tables]
    a = [t.obsm[KEY]["ERBB2"][m].mean() for t, m in zip(tables, tumor, strict=True)]
    b = [t.obsm[KEY]["ERBB2"][~m].mean() for t, m in zip(tables, tumor, strict=True)]
    expected = ttest_rel(a, b)
    assert pooled.loc["ERBB2", "statistic"] == pytest.approx(expected.statistic)
    assert pooled.loc["ERBB2", "pvalue"] == pytest.approx(expected.pvalue)
    diff = np.subtract(a, b)
    assert pooled.loc["ERBB2", "effect_size"] == pytest.approx(diff.mean() / diff.std(ddof=1))


def test_compare_regions_clusters_against_rest(sections):
    sdata = sections["s0"]
    obs = sdata["table"].obs
    obs["cluster"] = pd.Categorical(np.where(obs["latent_colour"] > 0.5, "a", np.where(obs["latent_texture"] > 0.5, "b", "c")))
    result = ht.tl.compare_regions(sdata, groupby="cluster", key=KEY)
    assert set(result["group"]) == {"a", "b", "c"} and set(result["reference"]) == {"rest"}
    assert "pooled" not in set(result["scope"])  # one section: nothing to pool
    vs_c = ht.tl.compare_regions(sdata, groupby="cluster", groups=["a"], reference="c", key=KEY)
    assert set(vs_c["group"]) == {"a"} and len(vs_c) == sdata["table"].obsm[KEY].shape[1]


def test_compare_regions_bad_input_writes_nothing(sections):
    sdata = sections["s0"]
    table = sdata["table"]
    table.obs["one"] = "x"
    with pytest.raises(ValueError, match="one group only"):
        ht.tl.compare_regions(sdata, groupby="one")
    with pytest.raises(ValueError, match=r"unknown groups \['maybe'\]"):
        ht.tl.compare_regions(sdata, groups=["maybe"])
    with pytest.raises(KeyError, match=r"no obs\['leiden'\] to group by"):
        ht.tl.compare_regions(sdata, groupby="leiden")
    del table.obsm[KEY]
    with pytest.raises(KeyError, match="has no predictions: run `ht.tl.predict_expression"):
        ht.tl.compare_regions([sections["s1"], sdata])
    assert "compare_regions" not in table.uns and "compare_regions" not in sections["s1"]["table"].uns


@pytest.mark.real_data
def test_signature_on_her2st_labels(her2st):
    """The default markers on B4's measured expression (as if perfectly predicted) find the authors' tumor."""
    from spatialdata import SpatialData

    source = her2st("B4")  # shared by the session: work on a copy of its table
    sdata = SpatialData(shapes=dict(source.shapes), tables={"table": source["table"].copy()})
    table = sdata["table"]
    markers = [g for g in (*TUMOR_MARKERS, *NON_TUMOR_MARKERS) if g in table.var_names]
    table.obsm["predicted_measured"] = table[:, markers].to_df()
    table.obs["truth"] = table.obs["tumor"]
    ht.tl.tumor_regions(sdata)
    auc = ht.tl.tumor_score_auc(sdata, label_key="truth")
    assert auc > 0.8
    result = ht.tl.compare_regions(sdata, key="predicted_measured")
    assert result.set_index("gene").loc["ERBB2", "log_fold_change"] > 0
