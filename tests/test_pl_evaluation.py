from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import hist2st_tk as ht

HISTORY = {
    "train_loss": [1.0, 0.7, 0.55, 0.48, 0.44, 0.41],
    "val_loss": [1.1, 0.8, 0.7, 0.72, 0.75, 0.8],
    "validation_section": ["C3"],
}


def scored_section():
    """A synthetic section whose table carries per-gene scores as ``tl.evaluate`` writes them."""
    sdata = ht.datasets.synthetic(n_spots=16, n_genes=12, seed=0, mpp=5.0)
    table = sdata.tables["table"]
    rng = np.random.default_rng(0)
    table.obsm["predicted_ridge"] = pd.DataFrame(
        rng.normal(size=(table.n_obs, 10)), index=table.obs_names, columns=table.var_names[:10]
    )
    pearson = np.full(table.n_vars, np.nan)
    pearson[:10] = np.linspace(-0.2, 0.7, 10)[rng.permutation(10)]
    table.var["predicted_ridge_pearson"] = pearson
    table.var["predicted_ridge_mae"] = np.r_[np.linspace(0.2, 1.1, 10), np.nan, np.nan]
    return sdata


def tidy_scores() -> pd.DataFrame:
    """Per-gene scores of two methods, three folds and two panels, in CrossValidation.scores' layout."""
    rng = np.random.default_rng(1)
    rows = []
    for method, shift in (("ridge", 0.0), ("histospace", 0.1)):
        for fold in ("B4", "C2", "C3"):
            for panel, n in (("top250mean", 12), ("top50var", 6)):
                for g in range(n):
                    value = 0.2 + shift + rng.normal(0, 0.1)
                    rows.append((method, fold, fold, panel, f"g{g}", "pearson", value))
                    rows.append((method, fold, fold, panel, f"g{g}", "mae", abs(value)))
    return pd.DataFrame(rows, columns=["method", "fold", "held_out", "panel", "gene", "metric", "value"])


def test_gene_scores_of_a_section(check_figure):
    sdata = scored_section()
    pearson = sdata.tables["table"].var["predicted_ridge_pearson"]
    fig = ht.pl.gene_scores(sdata, top=6)
    ax = fig.axes[0]
    best = pearson.dropna().sort_values(ascending=False)[:6]
    bars = sorted(ax.patches, key=lambda p: -p.get_y())  # top of the plot first
    np.testing.assert_allclose([b.get_width() for b in bars], best.to_numpy())
    ticks = sorted(zip(ax.get_yticks(), ax.get_yticklabels(), strict=True), key=lambda t: -t[0])
    assert [label.get_text() for _, label in ticks] == list(best.index)
    assert ax.get_title() == "predicted (ridge): best 6 of 10 genes"
    assert ax.get_xlabel() == "Pearson's r"
    assert ax.lines[0].get_xdata()[0] == pytest.approx(pearson.mean())
    check_figure(fig, "gene_scores_section")


def test_gene_scores_errors_are_lowest_first():
    fig = ht.pl.gene_scores(scored_section(), metric="mae", top=3)
    bars = sorted(fig.axes[0].patches, key=lambda p: -p.get_y())
    np.testing.assert_allclose([b.get_width() for b in bars], [0.2, 0.3, 0.4])
    assert fig.axes[0].get_xlabel() == "mean absolute error (log1p normalised counts)"
    plt.close(fig)


def test_gene_scores_compares_methods_and_folds(check_figure):
    scores = tidy_scores()
    fig = ht.pl.gene_scores(scores)
    assert [ax.get_title() for ax in fig.axes] == [
        "top250mean: Pearson's r per gene",
        "top50var: Pearson's r per gene",
    ]
    assert fig.axes[0].get_ylabel() == "Pearson's r"
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["B4", "C2", "C3"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ridge", "histospace"]
    # one box per (method, fold); its mean marker is the mean of that group's per-gene values
    means = [line.get_ydata()[0] for line in ax.lines if line.get_marker() == "o"]
    rows = scores[(scores["metric"] == "pearson") & (scores["panel"] == "top250mean")]
    expected = rows.groupby(["method", "fold"], sort=False)["value"].mean()
    np.testing.assert_allclose(means, expected.to_numpy())
    check_figure(fig, "gene_scores_folds")


def test_gene_scores_accepts_a_cross_validation():
    scores = tidy_scores().query("method == 'ridge'").drop(columns="method")
    cv = ht.tl.CrossValidation(
        scores=scores, folds=pd.DataFrame(), predictions={}, annotations={}, protocol="x"
    )
    fig = ht.pl.gene_scores(cv, groupby="held_out", metric="mae")
    assert fig.axes[0].get_legend() is None
    assert fig.axes[0].get_xlabel() == "held out"
    assert fig.axes[0].get_ylabel() == "mean absolute error (log1p normalised counts)"
    assert fig.axes[0].get_title() == "top250mean: mean absolute error per gene"
    plt.close(fig)


def test_gene_scores_bad_input():
    sdata = scored_section()
    with pytest.raises(ValueError, match=r"Unknown metric 'auc'; use one of \['pearson'"):
        ht.pl.gene_scores(sdata, metric="auc")
    with pytest.raises(KeyError, match=r"No per-gene scores var\['predicted_ridge_r2'\].*ht.tl.evaluate"):
        ht.pl.gene_scores(sdata, metric="r2")
    with pytest.raises(ValueError, match="`top` must be at least 1"):
        ht.pl.gene_scores(sdata, top=0)
    with pytest.raises(TypeError, match="must be a SpatialData scored by `ht.tl.evaluate`.*got a list"):
        ht.pl.gene_scores([0.1, 0.2])
    with pytest.raises(KeyError, match=r"lacks columns \['fold'\]"):
        ht.pl.gene_scores(tidy_scores().drop(columns="fold"))
    with pytest.raises(ValueError, match=r"holds no 'r2' scores; metrics there: \['mae', 'pearson'\]"):
        ht.pl.gene_scores(tidy_scores(), metric="r2")
    assert plt.get_fignums() == []


def test_training_history(check_figure):
    fig = ht.pl.training_history(HISTORY)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.lines}
    np.testing.assert_allclose(lines["train loss"].get_ydata(), HISTORY["train_loss"])
    np.testing.assert_allclose(lines["val loss"].get_xdata(), np.arange(1, 7))
    assert lines["best epoch (3)"].get_xdata()[0] == 3
    assert ax.get_title() == "training history (validation: C3)"
    check_figure(fig, "training_history")


def test_training_history_of_a_predictor():
    # the keys of a real `hist_multiscale` fit (2 epochs on two synthetic sections; fitting here
    # would cost ~15 s of Lightning start-up): only the *loss lists are drawn
    model = ht.models.MultiScalePredictor(use_rep=["X_a", "X_b"])
    model.history = {
        "train_loss": [1.59, 1.61],
        "val_loss": [2.99, 2.98],
        "validation_section": ["s1"],
        "tumor_labelled_spots": [32],
    }
    fig = ht.pl.training_history(model, log_scale=True)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["train loss", "val loss", "best epoch (2)"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), model.history["train_loss"])
    assert ax.get_yscale() == "log"
    assert ax.get_title() == "training history (validation: s1)"
    plt.close(fig)


def test_training_history_bad_input():
    with pytest.raises(
        ValueError, match=r"no per-epoch loss \(keys: \['alpha'\]\).*`ridge` fits in one step"
    ):
        ht.pl.training_history({"alpha": [1.0]})
    with pytest.raises(TypeError, match="Pass a fitted predictor or its `history` dict; got a list"):
        ht.pl.training_history([1.0, 0.5])
    with pytest.raises(ValueError, match="Cannot save a figure as 'xyz'"):
        ht.pl.training_history(HISTORY, save="f.xyz")


def test_image_comparison_catches_a_changed_plot(check_figure, monkeypatch):
    """The tolerance passes the same plot, not one whose data changed or a missing baseline."""
    monkeypatch.delenv("HIST2ST_TK_UPDATE_BASELINES", raising=False)  # never store the changed plot
    changed = {**HISTORY, "val_loss": [1.1, 0.9, 0.85, 0.6, 0.5, 0.45]}
    with pytest.raises(pytest.fail.Exception, match="training_history: Error: Image files did not match"):
        check_figure(ht.pl.training_history(changed), "training_history")
    with pytest.raises(pytest.fail.Exception, match="No baseline .*no_such_plot.png; create it with"):
        check_figure(ht.pl.training_history(HISTORY), "no_such_plot")
