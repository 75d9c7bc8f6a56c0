"""image2gene: similarity loss, kNN prediction from the saved reference bank, bad k."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hist2st_tk as ht
from hist2st_tk.models._image2gene import similarity_loss


def _section(seed: int, sample: str):
    sdata = ht.datasets.synthetic(n_spots=64, n_genes=10, seed=seed, sample=sample)
    table = sdata["table"]
    rng = np.random.default_rng(seed)
    latents = table.obs[["latent_colour", "latent_texture"]].to_numpy(dtype=np.float32)
    table.obsm["X_test"] = np.hstack([latents, rng.normal(size=(table.n_obs, 4)).astype(np.float32)])
    table.obsm["X_test"] += rng.normal(scale=0.2, size=(table.n_obs, 6)).astype(np.float32)
    table.uns["X_test"] = {"params": {"encoder": {"name": "test"}, "patch_um": 100.0}}
    return sdata


FAST = {"use_rep": "X_test", "hidden": 32, "dim": 16, "k": 5, "batch_size": 32}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def sections():
    return [_section(i, f"s{i}") for i in range(3)]


def test_similarity_loss_zero_when_embeddings_match_correlations():
    import torch

    targets = torch.randn(8, 5)
    profiles = targets - targets.mean(dim=1, keepdim=True)
    unit = profiles / profiles.norm(dim=1, keepdim=True)
    assert float(similarity_loss(unit, targets)) < 1e-10
    assert float(similarity_loss(torch.nn.functional.normalize(torch.randn(8, 5), dim=1), targets)) > 0.05


def test_image2gene_learns_and_bank_is_saved(sections, tmp_path):
    model = ht.tl.fit_predictor(
        sections[:2], method="image2gene", genes=6, use_coords=False, max_epochs=30, lr=3e-3, **FAST
    )
    assert model._bank["embedding"].shape == (128, 16) and model._bank["expression"].shape == (128, 6)
    ht.tl.predict_expression(sections[2], model)
    assert ht.tl.evaluate(sections[2], key="predicted_image2gene")["pearson"] > 0.4
    # kNN interpolation: each prediction lies within the range of the training expression
    predicted = sections[2]["table"].obsm["predicted_image2gene"].to_numpy()
    bank = model._bank["expression"]
    assert (predicted >= bank.min(axis=0) - 1e-5).all() and (predicted <= bank.max(axis=0) + 1e-5).all()
    loaded = ht.models.load(model.save(tmp_path / "i2g"))
    pd.testing.assert_frame_equal(loaded.predict(sections[2]), model.predict(sections[2]))


def test_image2gene_position_embedding(sections):
    model = ht.tl.fit_predictor(sections[:2], method="image2gene", genes=4, max_epochs=2, **FAST)
    inputs = model._section_inputs(sections[0], sections[0]["table"], "table", recorded=model.inputs)
    # synthetic spots are 100 um apart and bins are 200 um: two spots per bin along each axis
    assert inputs.bins.min() == 0 and inputs.bins[:, 0].max() == 3
    assert model.predict(sections[2]).shape == (64, 4)


def test_k_larger_than_bank(sections):
    with pytest.raises(ValueError, match=r"`k=500` is larger than the reference bank \(128 training spots\)"):
        ht.tl.fit_predictor(sections[:2], method="image2gene", genes=4, **{**FAST, "k": 500})
