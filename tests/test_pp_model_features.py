"""ht.pp.model_features replays the feature calls a fitted model recorded; the default model uses it."""

from __future__ import annotations

import numpy as np
import pytest

import hist2st_tk as ht


def _prepared(seed: int, sample: str):
    sdata = ht.datasets.synthetic(n_spots=36, n_genes=8, seed=seed, sample=sample)
    ht.pp.image_features(sdata, encoder="handcrafted", patch_um=55, progress=False)
    ht.pp.spatial_graph(sdata, method="radius", radius_um=150)
    ht.pp.aggregate_neighbors(sdata, use_rep="X_handcrafted")
    return sdata


@pytest.fixture(scope="module")
def model():
    train = _prepared(0, "train")
    return ht.tl.fit_predictor(train, method="ridge", genes=4, use_rep=["X_handcrafted", "X_handcrafted_nbr"])


def test_replays_image_features_and_context(model):
    fresh = ht.datasets.synthetic(n_spots=36, n_genes=8, seed=1, sample="new")
    assert model.inputs["X_handcrafted_nbr"]["graph"] == {
        "method": "radius",
        "n_neighs": None,
        "radius_um": 150,
    }
    added = ht.pp.model_features(fresh, model, progress=False)
    assert added == ["X_handcrafted", "X_handcrafted_nbr"]
    by_hand = _prepared(1, "new")
    for key in added:
        np.testing.assert_allclose(fresh["table"].obsm[key], by_hand["table"].obsm[key], rtol=1e-5)
    np.testing.assert_allclose(model.predict(fresh), model.predict(by_hand), rtol=1e-5)
    assert ht.pp.model_features(fresh, model) == []  # nothing left to do


def test_a_failed_replay_leaves_the_section_as_it_was(model):
    import copy

    broken = copy.deepcopy(model)
    broken.inputs["X_handcrafted_nbr"] = {
        **broken.inputs["X_handcrafted_nbr"],
        "aggregated_from": "X_elsewhere",
    }
    broken.inputs["X_elsewhere"] = {"encoder": "no_such_encoder", "patch_um": 55.0}
    fresh = ht.datasets.synthetic(n_spots=36, n_genes=8, seed=2, sample="other")
    obsm, shapes = set(fresh["table"].obsm), set(fresh.shapes)
    with pytest.raises(ValueError, match="no_such_encoder"):
        ht.pp.model_features(fresh, broken, progress=False)
    assert set(fresh["table"].obsm) == obsm and set(fresh.shapes) == shapes
    assert "spatial_connectivities" not in fresh["table"].obsp


def test_bad_models_are_refused(model):
    fresh = ht.datasets.synthetic(n_spots=36, n_genes=8, seed=1)
    with pytest.raises(TypeError, match="must be a fitted predictor"):
        ht.pp.model_features(fresh, ht.models.RidgePredictor())
    unrecorded = ht.models.RidgePredictor(use_rep="X_mine")
    unrecorded.genes, unrecorded.inputs = model.genes, {}
    with pytest.raises(ValueError, match=r"does not record how obsm \['X_mine'\] were made"):
        ht.pp.model_features(fresh, unrecorded)


def test_missing_features_name_the_call_that_makes_them(model):
    fresh = ht.datasets.synthetic(n_spots=36, n_genes=8, seed=1)
    with pytest.raises(KeyError, match=r"ht\.pp\.model_features\(sdata, model\)"):
        model.predict(fresh)


def test_default_model_is_shipped_with_its_card():
    from hist2st_tk._markers import NON_TUMOR_MARKERS, TUMOR_MARKERS
    from hist2st_tk.models._default import DEFAULT_MODEL_DIR

    model = ht.models.default_model()
    assert model.method == "ridge" and len(model.genes) > 250 and "ERBB2" in model.genes
    # every marker of the tumor signature (all measured in the six sections), so that it scores in full
    assert {*TUMOR_MARKERS, *NON_TUMOR_MARKERS} <= set(model.genes)
    assert model.trained_on == ["B4", "C2", "C3", "C4", "C5", "C6"]
    assert model.mpp_range() == (0.25, 4.0) and model.novelty is not None
    assert model.inputs["X_lite0_56um"]["working_mpp"] == 0.7
    card = (DEFAULT_MODEL_DIR / "MODEL_CARD.md").read_text()
    assert "her2st6-loso" in card and "Andersson" in card
    size = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir())
    assert size < 10_000_000


@pytest.mark.real_data
def test_default_model_predicts_a_real_section(her2st_copy):
    sdata = her2st_copy("B4")
    ht.pp.model_features(sdata, progress=False)
    predicted = ht.tl.predict_expression(sdata)
    assert predicted.shape == (sdata["table"].n_obs, len(ht.models.default_model().genes))
    summary = ht.tl.evaluate(sdata, key="predicted_ridge", label_key="tumor")
    assert summary["pearson"] > 0.2  # B4 is one of its training sections: a check of the plumbing only
    assert sdata["table"].uns["predicted_ridge"]["novelty"]["fraction_out_of_distribution"] < 0.5


def test_a_missing_default_model_says_how_to_make_it(tmp_path):
    from hist2st_tk.models._default import _load

    with pytest.raises(FileNotFoundError, match=r"default model is missing.*scripts/train_default_model\.py"):
        _load(tmp_path)


def test_sizes_of_one_encoder_are_made_in_one_multiscale_call(monkeypatch):
    """X_fft_50um and X_fft_100um (and the context of one) come from one call, equal to the call that made them."""
    from hist2st_tk.pp import _features

    train = ht.datasets.synthetic(n_spots=36, n_genes=8, seed=0, sample="train")
    ht.pp.image_features(train, encoder="fft", patch_um=[50, 100], progress=False)
    ht.pp.spatial_graph(train, method="radius", radius_um=150)
    ht.pp.aggregate_neighbors(train, use_rep="X_fft_100um")
    reps = ["X_fft_50um", "X_fft_100um", "X_fft_100um_nbr"]
    model = ht.tl.fit_predictor(train, method="ridge", genes=4, use_rep=reps)
    calls = []
    real = _features.image_features
    monkeypatch.setattr(_features, "image_features", lambda *a, **k: calls.append(k["patch_um"]) or real(*a, **k))
    fresh = ht.datasets.synthetic(n_spots=36, n_genes=8, seed=1, sample="new")
    assert ht.pp.model_features(fresh, model, progress=False) == reps
    assert calls == [[50.0, 100.0]]
    by_hand = ht.datasets.synthetic(n_spots=36, n_genes=8, seed=1, sample="new")
    ht.pp.image_features(by_hand, encoder="fft", patch_um=[50, 100], progress=False)
    for key in reps[:2]:
        np.testing.assert_array_equal(fresh["table"].obsm[key], by_hand["table"].obsm[key])


def test_a_feature_recipe_as_plain_data_is_replayed_like_its_model(model):
    recipe = model.feature_recipe
    assert set(recipe) == {"method", "use_rep", "inputs"} and recipe["use_rep"] == list(model.use_rep)
    recipe["inputs"]["X_handcrafted"]["patch_um"] = -1.0  # a copy: the model's own record is untouched
    assert model.inputs["X_handcrafted"]["patch_um"] == 55.0
    by_model = ht.datasets.synthetic(n_spots=36, n_genes=8, seed=1, sample="new")
    by_recipe = ht.datasets.synthetic(n_spots=36, n_genes=8, seed=1, sample="new")
    ht.pp.model_features(by_model, model, progress=False)
    ht.pp.model_features(by_recipe, model.feature_recipe, progress=False)
    for key in model.use_rep:
        np.testing.assert_array_equal(by_model["table"].obsm[key], by_recipe["table"].obsm[key])
    with pytest.raises(TypeError, match=r"its `feature_recipe`, or None for the default model; got \{'use_rep'"):
        ht.pp.model_features(by_recipe, {"use_rep": ["X_handcrafted"]})
