"""What a predictor refuses to fit on or to predict from: too few spots, constant expression, lost records."""

from __future__ import annotations

import numpy as np
import pytest

import hist2st_tk as ht
from hist2st_tk.models import method_class

GENES = ["gene_000", "gene_001", "gene_002"]
FAST = {"histospace": {"max_epochs": 1, "hidden": 8}}


def _section(seed: int, sample: str, *, n_spots: int = 36):
    """Synthetic section whose features ``X_test`` are its latents plus noise, with their record in ``uns``."""
    sdata = ht.datasets.synthetic(n_spots=n_spots, n_genes=6, seed=seed, sample=sample)
    table = sdata["table"]
    rng = np.random.default_rng(seed)
    latents = table.obs[["latent_colour", "latent_texture"]].to_numpy(dtype=np.float32)
    table.obsm["X_test"] = np.hstack([latents, rng.normal(size=(table.n_obs, 4)).astype(np.float32)])
    table.uns["X_test"] = {"params": {"encoder": {"name": "test"}, "patch_um": 56.0}}
    return sdata


@pytest.mark.parametrize("method", ["ridge", "histospace"])
def test_fit_refuses_a_single_spot(method):
    one = _section(0, "one", n_spots=1)
    with pytest.raises(
        ValueError, match=r"the training sections hold 1 spot in all; fitting needs at least 2"
    ):
        method_class(method)(use_rep="X_test", **FAST.get(method, {})).fit(one, genes=GENES)


@pytest.mark.parametrize("method", ["ridge", "histospace"])
def test_fit_refuses_constant_expression(method):
    sections = [_section(0, "s0"), _section(1, "s1")]
    for sdata in sections:
        sdata["table"].X = np.zeros(sdata["table"].shape, dtype=np.float32)
    with pytest.raises(
        ValueError,
        match=r"expression is zero/constant for every gene of the panel over the 72 training spots",
    ):
        method_class(method)(use_rep="X_test", **FAST.get(method, {})).fit(sections, genes=GENES)


def test_fit_accepts_some_constant_genes():
    sections = [_section(0, "s0"), _section(1, "s1")]
    for sdata in sections:
        sdata["table"].X[:, 0] = 0.0
    model = method_class("ridge")(use_rep="X_test").fit(sections, genes=GENES)
    assert model.is_fitted


def test_predict_refuses_features_whose_record_was_deleted():
    model = method_class("ridge")(use_rep="X_test").fit(_section(0, "s0"), genes=GENES)
    target = _section(2, "s2")
    del target["table"].uns["X_test"]
    with pytest.raises(
        ValueError,
        match=r"obsm\['X_test'\] does not match the model: table 'table' records no params of it "
        r"\(uns\['X_test'\]\['params'\]\) but the model was trained on encoder 'test', patch_um 56.0, "
        r"working_mpp None. Recompute the features with `ht.pp.image_features\(sdata, encoder='test', "
        r"patch_um=56.0, working_mpp=None\)`",
    ):
        model.predict(target)


def test_features_without_any_record_stay_usable():
    """A model fitted on features nobody recorded has nothing to compare: it predicts, as before."""
    bare = _section(0, "s0")
    del bare["table"].uns["X_test"]
    model = method_class("ridge")(use_rep="X_test").fit(bare, genes=GENES)
    target = _section(2, "s2")
    del target["table"].uns["X_test"]
    assert model.predict(target).shape == (36, 3)
