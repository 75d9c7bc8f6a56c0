from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
from scipy.stats import pearsonr
from sklearn.metrics import roc_auc_score

import hist2st_tk as ht

GENES = ["gene_000", "gene_001", "gene_002", "gene_004"]


def dense(matrix) -> np.ndarray:
    return np.asarray(matrix.toarray() if hasattr(matrix, "toarray") else matrix, dtype=np.float64)


def predicted_section(key: str = "predicted_ridge"):
    """A 6 x 6 synthetic section with deterministic 'predictions': a noisy, shrunken copy of X."""
    sdata = ht.datasets.synthetic(n_spots=36, n_genes=6, seed=0, mpp=5.0)
    table = sdata.tables["table"]
    rng = np.random.default_rng(0)
    measured = dense(table[:, GENES].X)
    predicted = 0.6 * measured + 0.4 * measured.mean(axis=0) + rng.normal(0, 0.3, measured.shape)
    table.obsm[key] = pd.DataFrame(predicted, index=table.obs_names, columns=GENES)
    table.obs["tumor_score"] = np.clip(table.obs["latent_colour"] + rng.normal(0, 0.2, table.n_obs), 0, 1)
    return sdata


def titled(fig) -> list:
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]


def test_spatial_expression_image(check_figure):
    fig = ht.pl.spatial_expression(predicted_section(), ["gene_000", "gene_001"], panel_size=2.2)
    check_figure(fig, "spatial_expression")


def test_spatial_expression_shares_one_colour_scale_per_gene():
    sdata = predicted_section()
    table = sdata.tables["table"]
    sdata.tables["table"] = table[::-1].copy()  # rows must be matched to spots by id, not by order
    fig = ht.pl.spatial_expression(sdata, GENES[:2], ncols=2)
    axes = titled(fig)
    assert [ax.get_title() for ax in axes] == [
        "gene_000 predicted (ridge)",
        "gene_000 measured",
        "gene_001 predicted (ridge)",
        "gene_001 measured",
    ]
    spots = sdata.shapes["synthetic_spots"].index
    for gene, (pred_ax, meas_ax) in zip(GENES[:2], [axes[:2], axes[2:]], strict=True):
        predicted = table.obsm["predicted_ridge"].loc[spots, gene].to_numpy()
        measured = dense(table[spots, gene].X).ravel()
        pred, meas = pred_ax.collections[0], meas_ax.collections[0]
        np.testing.assert_allclose(pred.get_array(), predicted)
        np.testing.assert_allclose(meas.get_array(), measured)
        both = np.concatenate([predicted, measured])
        assert pred.get_clim() == meas.get_clim() == pytest.approx((both.min(), both.max()))
    # one colour bar per gene, not per panel, with the unit of X and of the predictions
    assert len(fig.axes) == 4 + 2
    assert [ax.get_ylabel() for ax in fig.axes[4:]] == ["log1p normalised counts"] * 2
    # a scale bar on every image panel: the crop spans 166 px = 830 um at 5 um per px; a round fifth: 100 um
    for ax in axes:
        (bar,) = [a for a in ax.artists if isinstance(a, AnchoredSizeBar)]
        assert bar.txt_label.get_text() == "100 µm"
        assert bar.size_bar.get_children()[0].get_width() == pytest.approx(100 / 5.0)
    plt.close(fig)


def test_spatial_expression_from_a_layer_names_both_units():
    fig = ht.pl.spatial_expression(predicted_section(), "gene_000", layer="counts", scale_bar=False)
    assert [ax.get_title() for ax in titled(fig)] == [
        "gene_000 predicted (ridge)",
        "gene_000 measured (counts)",
    ]
    assert fig.axes[2].get_ylabel() == "log1p normalised counts (predicted), counts (measured)"
    assert not [a for ax in fig.axes for a in ax.artists]
    plt.close(fig)


def test_spatial_expression_predictions_only_and_save(tmp_path):
    sdata = predicted_section()
    fig = ht.pl.spatial_expression(sdata, GENES, measured=False, panel_size=2.0, save=tmp_path / "expr.png")
    assert [ax.get_title() for ax in titled(fig)] == [f"{g} predicted (ridge)" for g in GENES]
    assert (tmp_path / "expr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed into place
    plt.close(fig)


def test_spatial_expression_uses_the_most_recent_predictions():
    sdata = predicted_section()
    table = sdata.tables["table"]
    table.obsm["predicted_other"] = table.obsm["predicted_ridge"] + 1.0
    fig = ht.pl.spatial_expression(sdata, "gene_000", measured=False)
    assert [ax.get_title() for ax in titled(fig)] == ["gene_000 predicted (other)"]
    np.testing.assert_allclose(
        np.sort(titled(fig)[0].collections[0].get_array()),
        np.sort(table.obsm["predicted_other"]["gene_000"].to_numpy()),
    )
    fig = ht.pl.spatial_expression(sdata, "gene_000", key="predicted_ridge", measured=False)
    assert [ax.get_title() for ax in titled(fig)] == ["gene_000 predicted (ridge)"]
    plt.close("all")


def test_show_follows_the_backend(monkeypatch):
    shown = []
    monkeypatch.setattr(plt, "show", lambda: shown.append(True))
    sdata = predicted_section()
    ht.pl.predicted_vs_observed(sdata, "gene_000")  # Agg cannot show: not called
    assert shown == []
    ht.pl.predicted_vs_observed(sdata, "gene_000", show=True)
    assert shown == [True]
    plt.close("all")


def test_spatial_expression_bad_input(tmp_path):
    sdata = predicted_section()
    table = sdata.tables["table"]
    before = (list(table.obsm), list(table.obs.columns), list(table.layers))
    with pytest.raises(
        ValueError,
        match=r"2 genes were not predicted under 'predicted_ridge': 'NOPE', 'gene_003'; predicted genes e.g. 'gene_000'",
    ):
        ht.pl.spatial_expression(sdata, ["gene_000", "NOPE", "gene_003"])
    with pytest.raises(ValueError, match="at least one gene"):
        ht.pl.spatial_expression(sdata, [])
    with pytest.raises(
        KeyError, match=r"No predictions obsm\['predicted_x'\].*predictions there: \['predicted_ridge'\]"
    ):
        ht.pl.spatial_expression(sdata, "gene_000", key="predicted_x")
    with pytest.raises(KeyError, match=r"No layer 'nope'.*layers: \['counts'\]"):
        ht.pl.spatial_expression(sdata, "gene_000", layer="nope")
    with pytest.raises(ValueError, match="Cannot save a figure as 'xyz'"):
        ht.pl.spatial_expression(sdata, "gene_000", save=tmp_path / "f.xyz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ht.pl.spatial_expression(sdata, "gene_000", save=tmp_path / "missing" / "f.png")
    with pytest.raises(ValueError, match="`ncols` must be at least 1"):
        ht.pl.spatial_expression(sdata, "gene_000", ncols=0)
    assert (list(table.obsm), list(table.obs.columns), list(table.layers)) == before
    assert plt.get_fignums() == []  # failed before drawing

    table.obsm["predicted_ridge"]["NEW"] = 1.0  # predicted, but not measured
    with pytest.raises(ValueError, match="1 genes are predicted but not measured.*'NEW'.*measured=False"):
        ht.pl.spatial_expression(sdata, "NEW")
    del table.obsm["predicted_ridge"]
    with pytest.raises(KeyError, match=r"has no predictions.*predict_expression"):
        ht.pl.spatial_expression(sdata, "gene_000")


def test_spatial_expression_of_an_h_and_e_only_slide():
    """The gene-less layout of predict_expression: X holds the predictions, nothing is measured."""
    import anndata as ad

    sdata = predicted_section()
    table = sdata.tables["table"]
    predictions = table.obsm["predicted_ridge"]
    slide = ad.AnnData(
        X=predictions.to_numpy(),
        obs=table.obs.copy(),
        var=pd.DataFrame(index=GENES),
        uns={**dict(table.uns), "predicted_ridge": {"params": {}}},
    )
    slide.obsm["predicted_ridge"] = predictions
    sdata.tables["table"] = slide
    with pytest.raises(
        ValueError, match="no measured expression: its X holds the predictions 'predicted_ridge'"
    ):
        ht.pl.spatial_expression(sdata, "gene_000")
    fig = ht.pl.spatial_expression(sdata, "gene_000", measured=False)
    assert [ax.get_title() for ax in titled(fig)] == ["gene_000 predicted (ridge)"]
    # ht.pl.spatial reads the genes of such a slide from X, which holds these predictions
    fig = ht.pl.spatial(sdata, "gene_000")
    assert fig.axes[0].get_title() == "gene_000 predicted (ridge)"
    assert fig.axes[1].get_ylabel() == "log1p normalised counts"
    plt.close(fig)


def test_predicted_vs_observed(check_figure):
    sdata = predicted_section()
    table = sdata.tables["table"]
    fig = ht.pl.predicted_vs_observed(sdata, GENES, ncols=2)
    for ax, gene in zip(titled(fig), GENES, strict=True):
        measured = dense(table[:, gene].X).ravel()
        predicted = table.obsm["predicted_ridge"][gene].to_numpy()
        assert ax.get_title() == f"{gene}  r = {pearsonr(measured, predicted)[0]:.2f}"
        assert ax.get_xlabel() == "measured\nlog1p normalised counts"
        assert ax.get_ylabel() == "predicted (ridge)\nlog1p normalised counts"
        np.testing.assert_allclose(ax.collections[0].get_offsets(), np.column_stack([measured, predicted]))
    assert fig.get_suptitle() == "predicted (ridge)"
    check_figure(fig, "predicted_vs_observed")


def test_predicted_vs_observed_bad_input():
    sdata = predicted_section()
    with pytest.raises(ValueError, match="1 genes were not predicted under 'predicted_ridge': 'gene_005'"):
        ht.pl.predicted_vs_observed(sdata, ["gene_000", "gene_005"])
    with pytest.raises(TypeError, match="`ncols` must be an integer"):
        ht.pl.predicted_vs_observed(sdata, "gene_000", ncols=1.5)
    with pytest.raises(KeyError, match="No table 'other'"):
        ht.pl.predicted_vs_observed(sdata, "gene_000", table_key="other")


def test_tumor_map(check_figure):
    sdata = predicted_section()
    obs = sdata.tables["table"].obs
    fig = ht.pl.tumor_map(sdata, panel_size=2.5)
    score_ax, label_ax, bars_ax = titled(fig)
    auc = roc_auc_score(obs["tumor"].astype(bool), obs["tumor_score"])
    assert score_ax.get_title() == f"tumor score\nAUC vs tumor: {auc:.2f}"
    assert score_ax.collections[0].get_clim() == (0.0, 1.0)
    assert score_ax.collections[0].colorbar.ax.get_ylabel() == "tumor probability"
    legend = label_ax.get_legend()
    assert legend.get_title().get_text() == "region label (data authors')"
    assert [t.get_text() for t in legend.get_texts()] == ["False", "True"]
    # beside the AUC: the mean score of each label (here the labels themselves), highest on top
    means = obs.groupby(obs["tumor"].astype(bool))["tumor_score"].mean().sort_values(ascending=False)
    bars = sorted(bars_ax.patches, key=lambda p: -p.get_y())
    np.testing.assert_allclose([b.get_width() for b in bars], means.to_numpy())
    counts = obs["tumor"].astype(bool).value_counts()
    ticks = sorted(zip(bars_ax.get_yticks(), bars_ax.get_yticklabels(), strict=True), key=lambda t: -t[0])
    assert [t.get_text() for _, t in ticks] == [f"{label} (n={counts[label]})" for label in means.index]
    assert bars_ax.get_title() == "mean score by tumor"
    assert bars_ax.get_xlabel() == "mean tumor probability"
    for ax in (score_ax, label_ax):
        assert [a.txt_label.get_text() for a in ax.artists if isinstance(a, AnchoredSizeBar)] == ["100 µm"]
    check_figure(fig, "tumor_map")


def test_tumor_map_mean_score_per_region_label():
    """HER2ST's layout: finer region labels beside the boolean tumor, each bar in its region's label colour."""
    from matplotlib.colors import to_hex

    from hist2st_tk.pl._utils import BOOLEAN_COLOURS

    sdata = predicted_section()
    obs = sdata.tables["table"].obs
    tumor = obs["tumor"].astype(bool)
    obs["region_label"] = pd.Categorical(
        np.where(tumor, "cancer", np.where(obs["latent_texture"] > 0.5, "immune", "adipose"))
    )
    obs.loc[obs.index[:3], "region_label"] = np.nan  # spots without a label are left out
    fig = ht.pl.tumor_map(sdata, label_title="tumor (my annotation)")
    _, label_ax, bars_ax = titled(fig)
    assert label_ax.get_legend().get_title().get_text() == "tumor (my annotation)"
    assert bars_ax.get_title() == "mean score by region label"
    labelled = obs[obs["region_label"].notna()]
    means = labelled.groupby("region_label", observed=True)["tumor_score"].mean().sort_values(ascending=False)
    bars = sorted(bars_ax.patches, key=lambda p: -p.get_y())
    np.testing.assert_allclose([b.get_width() for b in bars], means.to_numpy())
    colours = [to_hex(b.get_facecolor()[:3]) for b in bars]
    assert colours == [BOOLEAN_COLOURS[region == "cancer"] for region in means.index]
    # region_key chooses another grouping; label_title=None drops the legend title
    fig = ht.pl.tumor_map(sdata, region_key="tumor", label_title=None)
    assert titled(fig)[2].get_title() == "mean score by tumor"
    assert titled(fig)[1].get_legend().get_title().get_text() == ""
    plt.close("all")


def test_tumor_map_of_a_marker_signature():
    """A score of tl.tumor_regions without a classifier is no probability: its colour bar says so."""
    sdata = predicted_section()
    ht.tl.tumor_regions(sdata, signature=["gene_000", "gene_001"])
    fig = ht.pl.tumor_map(sdata)
    assert titled(fig)[0].collections[0].colorbar.ax.get_ylabel() == "tumor marker signature (logistic)"
    plt.close(fig)


def test_tumor_map_without_labels_and_bad_input():
    sdata = predicted_section()
    obs = sdata.tables["table"].obs
    fig = ht.pl.tumor_map(sdata, label_key=None)
    assert [ax.get_title() for ax in titled(fig)] == ["tumor score"]
    plt.close(fig)
    with pytest.raises(KeyError, match=r"No obs\['region_kind'\] \(`label_key`\).*label_key=None"):
        ht.pl.tumor_map(sdata, label_key="region_kind")
    with pytest.raises(KeyError, match=r"No obs\['score'\] \(`score_key`\).*obs columns: \["):
        ht.pl.tumor_map(sdata, score_key="score")
    with pytest.raises(TypeError, match=r"obs\['tumor'\] must hold numeric scores"):
        ht.pl.tumor_map(sdata, score_key="tumor")
    with pytest.raises(KeyError, match=r"No obs\['region_kind'\] \(`region_key`\) in table 'table'"):
        ht.pl.tumor_map(sdata, region_key="region_kind")
    with pytest.raises(TypeError, match="`label_title` must be a string or None, got a bool"):
        ht.pl.tumor_map(sdata, label_title=False)
    with pytest.raises(ValueError, match="`scale_bar` must be a positive length in µm, got 0"):
        ht.pl.tumor_map(sdata, scale_bar=0)
    assert "region_kind" not in obs
    assert plt.get_fignums() == []


def test_plots_of_a_fitted_predictor():
    """The keys written by fit_predictor / predict_expression / evaluate are the ones the plots read."""
    sdata = ht.datasets.synthetic(n_spots=49, n_genes=8, seed=1, mpp=5.0)
    table = sdata.tables["table"]
    # the hidden latents as 'image features' keep the test fast (no encoder, no torch)
    noise = np.random.default_rng(1).normal(size=table.n_obs)
    table.obsm["X_latent"] = np.column_stack([table.obs["latent_colour"], table.obs["latent_texture"], noise])
    model = ht.tl.fit_predictor(sdata, method="ridge", genes=4, use_rep="X_latent")
    ht.tl.predict_expression(sdata, model)
    ht.tl.evaluate(sdata, key="predicted_ridge")
    genes = list(model.genes[:2])
    fig = ht.pl.spatial_expression(sdata, genes)
    assert [ax.get_title() for ax in titled(fig)][:2] == [
        f"{genes[0]} predicted (ridge)",
        f"{genes[0]} measured",
    ]
    fig = ht.pl.predicted_vs_observed(sdata, genes)
    pearson = sdata.tables["table"].var["predicted_ridge_pearson"]
    assert [ax.get_title() for ax in titled(fig)] == [f"{g}  r = {pearson[g]:.2f}" for g in genes]
    fig = ht.pl.gene_scores(sdata)
    assert len(fig.axes[0].patches) == 4
    assert "predicted_ridge_spot_pearson" in sdata.tables["table"].obs  # written by tl.evaluate
    fig = ht.pl.spatial(sdata, "predicted_ridge_spot_pearson")
    assert fig.axes[0].get_title() == "Pearson's r per spot"
    assert fig.axes[1].get_ylabel() == "Pearson's r across genes"
    plt.close("all")
