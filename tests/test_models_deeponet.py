"""deeponet: per-modality PCA from the training spots, branch/trunk expression, classification head, genes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hist2st_tk as ht


def _section(seed: int, sample: str):
    """Two 'modalities' of features derived from the hidden latents, and tumor labels."""
    sdata = ht.datasets.synthetic(n_spots=64, n_genes=10, seed=seed, sample=sample)
    table = sdata["table"]
    rng = np.random.default_rng(seed)
    latents = table.obs[["latent_colour", "latent_texture"]].to_numpy(dtype=np.float32)
    for key, width in (("X_cnn", 12), ("X_fft", 6)):
        mixing = np.random.default_rng(len(key) + width).normal(size=(2, width)).astype(np.float32)
        table.obsm[key] = latents @ mixing + rng.normal(scale=0.2, size=(table.n_obs, width)).astype(
            np.float32
        )
        table.uns[key] = {"params": {"encoder": {"name": key}, "patch_um": 100.0}}
    return sdata


REPS = ["X_cnn", "X_fft"]
FAST = {"use_rep": REPS, "n_components": 4, "hidden": 32, "basis": 8, "gene_dim": 4, "batch_size": 32}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def sections():
    return [_section(i, f"s{i}") for i in range(4)]


def test_deeponet_learns_expression_and_labels(sections, tmp_path):
    model = ht.tl.fit_predictor(sections[:3], method="deeponet", genes=6, max_epochs=40, lr=3e-3, **FAST)
    assert [components.shape for _, components in model._pca] == [(4, 12), (4, 6)]
    assert model.hparams["classes"] == ["False", "True"]
    assert 0 <= model.history["classification_accuracy"][0] <= 1
    assert 0 <= model.history["classification_precision"][0] <= 1
    ht.tl.predict_expression(sections[3], model)
    assert ht.tl.evaluate(sections[3], key="predicted_deeponet")["pearson"] > 0.4
    from sklearn.metrics import roc_auc_score

    table = sections[3]["table"]
    assert roc_auc_score(table.obs["tumor"].astype(bool), table.obs["tumor_score"]) > 0.8
    loaded = ht.models.load(model.save(tmp_path / "don"))
    pd.testing.assert_frame_equal(loaded.predict(sections[3]), model.predict(sections[3]))
    # the trunk evaluated on a subset of genes gives those genes' columns of the full prediction
    subset = list(model.genes[[4, 1]])
    pd.testing.assert_frame_equal(
        loaded.predict_genes(sections[3], genes=subset), model.predict(sections[3])[subset], atol=1e-5
    )


def test_deeponet_trunk_location_and_categorical_label(sections):
    for sd in sections[:3]:
        obs = sd["table"].obs
        obs["region"] = np.where(
            obs["latent_colour"] > 0.6, "a", np.where(obs["latent_texture"] > 0.5, "b", "c")
        )
    model = ht.tl.fit_predictor(
        sections[:2],
        method="deeponet",
        genes=4,
        trunk_location=True,
        label_key="region",
        max_epochs=2,
        **FAST,
    )
    assert model.hparams["classes"] == ["a", "b", "c"]
    predicted, annotations = model.predict_all(sections[2])
    assert predicted.shape == (64, 4) and set(annotations["region_predicted"]) <= {"a", "b", "c"}


def test_trunk_asked_for_unknown_genes(sections):
    model = ht.tl.fit_predictor(sections[:2], method="deeponet", genes=4, max_epochs=1, **FAST)
    with pytest.raises(KeyError, match=r"knows only the 4 genes it was trained on; not in training: 'NOPE'"):
        model.predict_genes(sections[2], genes=[model.genes[0], "NOPE"])
