"""The default model's recipe as data: ``ht.models.DEFAULT_RECIPE`` and ``ht.models.fit_options``."""

from __future__ import annotations

import pytest

import hist2st_tk as ht


def test_fit_options_leave_out_the_feature_options_only():
    recipe = {**ht.models.DEFAULT_RECIPE, "working_mpp": 0.7, "augment_mpp": [4.0]}
    before = dict(recipe)
    options = ht.models.fit_options(recipe)
    assert set(recipe) - set(options) == {"working_mpp", "augment_mpp"}
    assert options == {k: v for k, v in recipe.items() if k not in ("working_mpp", "augment_mpp")}
    assert recipe == before and options is not recipe  # the recipe itself is left as it is
    assert ht.models.fit_options({"method": "ridge", "use_rep": "X"}) == {"method": "ridge", "use_rep": "X"}


def test_fit_options_fit_a_model_of_the_recipe():
    """What fit_options returns is what fit_predictor takes, with a recipe of feature options."""
    recipe = {
        "method": "ridge",
        "use_rep": ["X_handcrafted"],
        "center": True,
        "working_mpp": 2.0,
        "augment_mpp": [4.0],
    }
    train = []
    for seed in (0, 1):
        sdata = ht.datasets.synthetic(n_spots=36, n_genes=8, seed=seed, sample=f"s{seed}")
        ht.pp.image_features(sdata, encoder="handcrafted", patch_um=56, progress=False)
        train.append(sdata)
    model = ht.tl.fit_predictor(train, genes=4, **ht.models.fit_options(recipe))
    assert model.method == "ridge" and model.use_rep == ["X_handcrafted"] and model.is_fitted


@pytest.mark.parametrize(
    "recipe",
    ["ridge_multiscale_context_centred_multires", None, ["ridge"], {"use_rep": "X_lite0"}, {"method": 3}],
)
def test_fit_options_refuse_what_is_not_a_recipe(recipe):
    with pytest.raises(TypeError, match=r"`recipe` must be a dict naming its `method`.*DEFAULT_RECIPE; got "):
        ht.models.fit_options(recipe)
