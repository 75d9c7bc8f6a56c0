"""Predictions on a new slide: perturbed scans, a working resolution, one-call prediction, novelty and warnings."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

import hist2st_tk as ht
from hist2st_tk.io._elements import he_image


def _section(seed: int, sample: str, mpp: float = 1.0):
    return ht.datasets.synthetic(n_spots=36, n_genes=8, seed=seed, sample=sample, mpp=mpp)


def _handcrafted(sdata, **kwargs):
    ht.pp.image_features(sdata, encoder="handcrafted", patch_um=56, progress=False, **kwargs)
    return sdata


@pytest.fixture(scope="module")
def model():
    """Ridge on handcrafted features rendered at 4 um/px, fitted on three synthetic sections."""
    train = [_handcrafted(_section(seed, f"t{seed}"), working_mpp=4.0) for seed in range(3)]
    return ht.tl.fit_predictor(train, method="ridge", genes=4, use_rep="X_handcrafted")


# -- ht.pp.perturb ----------------------------------------------------------------------------------
def test_perturb_moves_spots_and_scale_and_leaves_the_original():
    sdata = _section(0, "s")
    table = sdata["table"]
    table.layers["predicted_x"] = table.X.copy()  # predictions describe the original pixels: left out
    table.uns["predicted_x"] = {"params": {"method": "ridge"}}
    image_before = np.asarray(sdata["s_he"].data).copy()
    coarse = ht.pp.perturb(sdata, mpp=2.0, jpeg_quality=40, blur_um=1.0, stain_jitter=0.05, seed=3)
    assert ht.io.get_mpp(coarse) == (2.0, "user")
    height, width = sdata["s_he"].shape[1:]
    assert coarse["s_he"].shape[1:] == (round(height / 2), round(width / 2))
    np.testing.assert_allclose(coarse["table"].obsm["spatial"], sdata["table"].obsm["spatial"] / 2)
    centres = coarse["s_spots"].geometry
    np.testing.assert_allclose(centres.x, sdata["s_spots"].geometry.x / 2)
    np.testing.assert_allclose(coarse["s_spots"]["radius"], sdata["s_spots"]["radius"] / 2)
    assert "predicted_x" not in coarse["table"].layers and "counts" in coarse["table"].layers
    record = coarse.attrs["hist2st_tk"]["perturbation"]
    assert record["jpeg_quality"] == 40 and record["stain_jitter"]["seed"] == 3
    assert len(record["stain_jitter"]["alpha"]) == 3
    np.testing.assert_array_equal(np.asarray(sdata["s_he"].data), image_before)
    assert ht.io.get_mpp(sdata)[0] == 1.0


def test_stain_jitter_changes_colour_but_zero_strength_does_not():
    rgb = np.asarray(_section(0, "s")["s_he"].data).transpose(1, 2, 0)[:64, :64]
    alpha, beta = ht.pp._perturb.hed_factors(0.0)
    same = ht.pp._perturb.hed_jitter(rgb, alpha, beta)
    assert np.abs(same.astype(int) - rgb).max() <= 1
    alpha, beta = ht.pp._perturb.hed_factors(0.2, seed=1)
    assert np.abs(ht.pp._perturb.hed_jitter(rgb, alpha, beta).astype(int) - rgb).mean() > 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"jpeg_quality": 0}, ValueError, r"`jpeg_quality` must be an integer from 1 to 95, got 0"),
        ({"mpp": -1}, ValueError, r"`mpp` must be a positive, finite number"),
        ({"blur_um": 0}, ValueError, r"`blur_um` must be a positive, finite number of microns"),
        ({"stain_jitter": 1.5}, ValueError, r"stain jitter strength must be in \[0, 1\), got 1.5"),
    ],
)
def test_perturb_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        ht.pp.perturb(_section(0, "s"), **kwargs)


# -- working resolution -------------------------------------------------------------------------------
def test_working_resolution_gives_the_same_features_at_any_finer_scale():
    fine = _section(0, "s", mpp=1.0)
    coarse = ht.pp.perturb(fine, mpp=2.0)
    for sdata in (fine, coarse):
        _handcrafted(sdata, working_mpp=4.0)
    params = fine["table"].uns["X_handcrafted"]["params"]
    assert params["working_mpp"] == 4.0 and params["render_px"] == 14 and params["mpp"] == 1.0
    coarse_params = coarse["table"].uns["X_handcrafted"]["params"]
    assert coarse_params["mpp"] == 2.0 and coarse_params["render_px"] == 14  # the rendering it claims
    a, b = (np.asarray(s["table"].obsm["X_handcrafted"]) for s in (fine, coarse))
    # the same tissue at 1 and 2 um/px: rendered at 4 um/px, the features agree closely ...
    rendered = np.corrcoef(a.ravel(), b.ravel())[0, 1]
    # ... more closely than at the images' own resolutions
    for sdata in (fine, coarse):
        _handcrafted(sdata, key_added="X_native")
    c, d = (np.asarray(s["table"].obsm["X_native"]) for s in (fine, coarse))
    assert rendered > 0.95
    assert np.abs(a - b).mean() < np.abs(c - d).mean()


def test_working_resolution_bad_input():
    with pytest.raises(
        ValueError, match=r"`working_mpp` must be a positive, finite number of microns, got -2"
    ):
        _handcrafted(_section(0, "s"), working_mpp=-2)


def test_coarser_image_than_working_resolution_keeps_its_pixels(caplog):
    with caplog.at_level(logging.INFO, logger="hist2st_tk"):
        sdata = _handcrafted(_section(0, "s", mpp=1.0), working_mpp=0.5)
    assert "coarser than the working resolution" in caplog.text
    assert sdata["table"].uns["X_handcrafted"]["params"]["render_px"] is None


# -- one call -----------------------------------------------------------------------------------------
def test_one_call_computes_missing_features(model):
    assert model.inputs["X_handcrafted"]["working_mpp"] == 4.0
    fresh = _section(7, "new")
    predicted = ht.tl.predict_expression(fresh, model, progress=False)
    table = fresh["table"]
    assert "X_handcrafted" in table.obsm and predicted.shape == (36, 4)
    assert table.uns["X_handcrafted"]["params"]["working_mpp"] == 4.0
    by_hand = _handcrafted(_section(7, "new"), working_mpp=4.0)
    np.testing.assert_allclose(predicted, model.predict(by_hand), rtol=1e-5)


def test_compute_features_false_restores_strictness(model):
    fresh = _section(7, "new")
    with pytest.raises(KeyError, match=r"no obsm\['X_handcrafted'\].*model_features"):
        ht.tl.predict_expression(fresh, model, compute_features=False)
    assert "X_handcrafted" not in fresh["table"].obsm


def test_features_of_another_working_resolution_are_refused(model):
    other = _handcrafted(_section(7, "new"), working_mpp=2.0)
    with pytest.raises(ValueError, match=r"working_mpp is 2.0 here but the model was trained on 4.0"):
        ht.tl.predict_expression(other, model, compute_features=False)


def test_one_call_rolls_back_on_failure(model, monkeypatch):
    fresh = _section(7, "new")
    table = fresh["table"]
    obsm, uns, shapes = set(table.obsm), set(table.uns), set(fresh.shapes)

    def broken(features):
        raise RuntimeError("predictor failed")

    monkeypatch.setattr(model, "_predict", broken)
    with pytest.raises(RuntimeError, match="predictor failed"):
        ht.tl.predict_expression(fresh, model, progress=False)
    assert set(table.obsm) == obsm and set(table.uns) == uns and set(fresh.shapes) == shapes


# -- novelty and warnings -----------------------------------------------------------------------------
def test_novelty_is_low_on_training_like_data_and_high_on_shifted_data(model, caplog):
    like = _handcrafted(_section(11, "like"), working_mpp=4.0)
    with caplog.at_level(logging.WARNING, logger="hist2st_tk"):
        ht.tl.predict_expression(like, model)
    novelty = like["table"].obs["predicted_ridge_novelty"]
    assert novelty.between(0, 1).all() and novelty.median() < 0.9
    summary = like["table"].uns["predicted_ridge"]["novelty"]
    assert summary["fraction_out_of_distribution"] < 0.5 and "look unlike" not in caplog.text

    shifted = _handcrafted(_section(11, "shifted"), working_mpp=4.0)
    features = shifted["table"].obsm["X_handcrafted"]
    shifted["table"].obsm["X_handcrafted"] = features + 10 * features.std(axis=0) * np.random.default_rng(
        0
    ).normal(size=features.shape).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="hist2st_tk"):
        ht.tl.predict_expression(shifted, model)
    assert shifted["table"].obs["predicted_ridge_novelty"].median() > 0.99
    assert "look unlike anything the model was trained on" in caplog.text
    figure = ht.pl.spatial(shifted, "predicted_ridge_novelty", show=False)  # a map of where not to trust it
    assert figure.axes[0].get_title() == "novelty"


def test_novelty_survives_save_and_load(model, tmp_path):
    loaded = ht.models.Predictor.load(model.save(tmp_path / "m"))
    section = _handcrafted(_section(11, "like"), working_mpp=4.0)
    np.testing.assert_allclose(
        loaded.predict_all(section)[1]["novelty"], model.predict_all(section)[1]["novelty"], rtol=1e-5
    )
    assert loaded.mpp_range() == model.mpp_range() == (0.0, 4.0)


def test_blank_image_and_out_of_range_scale_warn(model, caplog):
    blank = _section(7, "blank")
    blank.images["blank_he"] = he_image(np.full(blank["blank_he"].shape, 200, dtype=np.uint8))
    with caplog.at_level(logging.WARNING, logger="hist2st_tk"):
        messages = ht.tl.warn_if_unsuitable(blank, model)
    assert len(messages) == 1 and "is blank" in messages[0] and "is blank" in caplog.text
    coarse = _section(7, "coarse", mpp=8.0)
    messages = ht.tl.warn_if_unsuitable(coarse, model)
    assert len(messages) == 1 and "8 um/px, outside the range" in messages[0] and "(0-4 um/px)" in messages[0]
    assert ht.tl.warn_if_unsuitable(_section(7, "fine"), model) == []


# -- the signature tumor head ---------------------------------------------------------------------------
def test_ridge_signature_tumor_head_follows_the_predicted_markers(tmp_path):
    train = [_handcrafted(_section(seed, f"t{seed}")) for seed in range(3)]
    signature = {"positive": ["gene_000", "gene_001"], "negative": ["gene_002"]}
    model = ht.tl.fit_predictor(
        train,
        method="ridge",
        genes=["gene_000", "gene_001", "gene_002", "gene_003"],
        use_rep="X_handcrafted",
        tumor_signature=signature,
    )
    test = _handcrafted(_section(9, "test"))
    expression, annotations = model.predict_all(test)
    z = (expression - expression.mean()) / expression.std(ddof=0)
    score = z[["gene_000", "gene_001"]].mean(axis=1) - z["gene_002"]
    # the probability is a monotone (logistic) function of the signature of the predictions
    from scipy.stats import spearmanr

    assert abs(spearmanr(score, annotations["tumor_score"]).statistic) > 0.999
    assert "tumor_coef" not in model._arrays and "tumor_signature_coef" in model._arrays
    loaded = ht.models.Predictor.load(model.save(tmp_path / "m"))
    np.testing.assert_allclose(
        loaded.predict_all(test)[1]["tumor_score"], annotations["tumor_score"], rtol=1e-5
    )


# -- hist2st bench robustness ---------------------------------------------------------------------------
def test_bench_robustness_table(tmp_path, monkeypatch):
    """The runner on stand-in sections named like HER2ST (the real run is `hist2st bench robustness`)."""
    from hist2st_tk.bench import _accuracy, _robustness

    recipe = {"method": "ridge", "use_rep": ["X_handcrafted"], "center": True, "augment_mpp": [2.0]}
    monkeypatch.setitem(_accuracy.METHODS, "stand_in", recipe)

    def stand_in_sections(**kwargs):
        sections = {}
        for i, name in enumerate(["B4", "C2", "C3"]):
            sdata = ht.datasets.synthetic(n_spots=25, n_genes=260, seed=i, sample=name, patient=name[0])
            table = sdata["table"]
            table.var_names = ["ERBB2", "KRT8", "COL1A1", *table.var_names[3:]]  # markers of the signature
            sections[name] = _handcrafted(sdata)
            sections[f"{name}@2"] = _handcrafted(ht.pp.perturb(sdata, mpp=2.0))
        return sections

    monkeypatch.setattr(_robustness, "load_sections", stand_in_sections)
    monkeypatch.setitem(_robustness.FOLDS, "C->B4", (["C2", "C3"], ["B4"]))
    table = _robustness.bench_robustness(
        ["C->B4"], ["2 um/px", "JPEG q40"], recipe="stand_in", out_dir=tmp_path, cache_dir=tmp_path / "cache"
    )
    assert list(dict.fromkeys(table["condition"])) == ["as scanned", "2 um/px", "JPEG q40"]
    scanned = table[table["condition"] == "as scanned"]
    assert np.allclose(scanned["pearson_ratio"], 1.0) and (scanned["pearson"] > 0.3).all()
    assert table["fraction_ood"].notna().all()
    assert (tmp_path / "robustness.md").is_file() and (tmp_path / "robustness.png").is_file()
    assert len(list((tmp_path / "cache" / "perturbed" / "stand_in").glob("B4__*.npz"))) == 2
    with pytest.raises(ValueError, match=r"Unknown perturbations \['nope'\]; known:"):
        _robustness.bench_robustness(["C->B4"], ["nope"], recipe="stand_in", out_dir=tmp_path)


def test_mpp_range_covers_the_training_renderings():
    base = _section(0, "t0")
    coarse = ht.pp.perturb(base, mpp=4.0)  # the section as a 4 um/px scanner would have imaged it
    train = [_handcrafted(sdata, working_mpp=0.5) for sdata in (base, coarse)]
    model = ht.tl.fit_predictor(train, method="ridge", genes=3, use_rep="X_handcrafted")
    assert model.training_mpp == [1.0, 4.0] and model.trained_on == ["t0"]
    assert model.mpp_range() == (0.0, 4.0)
    assert model.novelty is None  # one section: nothing held out to calibrate on
    model.validated_mpp = (0.25, 4.0)
    assert model.mpp_range() == (0.25, 4.0)


@pytest.mark.parametrize(("key", "where"), [("counts", "layers['counts']"), ("spatial", "obsm['spatial']")])
def test_key_added_never_overwrites_data_it_did_not_write(model, key, where):
    section = _handcrafted(_section(11, "s"), working_mpp=4.0)
    table = section["table"]
    before = table.layers["counts"].copy(), table.obsm["spatial"].copy()
    with pytest.raises(ValueError, match=re.escape(f"`key_added={key!r}` would overwrite {where}")):
        ht.tl.predict_expression(section, model, key_added=key)
    assert (table.layers["counts"] != before[0]).nnz == 0
    np.testing.assert_array_equal(table.obsm["spatial"], before[1])
    ht.tl.predict_expression(section, model, key_added="mine")
    ht.tl.predict_expression(section, model, key_added="mine")  # its own key: replaced


def test_predict_slide_warns_once_before_streaming(model, caplog):
    slide = _section(7, "slide", mpp=8.0)
    with caplog.at_level(logging.WARNING, logger="hist2st_tk"):
        ht.tl.predict_slide(slide, model, batch_tiles=16)
    assert caplog.text.count("outside the range the 'ridge' model is meant for") == 1
    assert "predicted_ridge_novelty" in slide["table"].obs
