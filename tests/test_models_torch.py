"""Neural predictors: Lightning training (seeded, early stopping, resume), tumor head, save/load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hist2st_tk as ht
from hist2st_tk.models import MultiScalePredictor


def _section(seed: int, sample: str):
    """Synthetic section with three 'scales' of features derived from the hidden latents."""
    sdata = ht.datasets.synthetic(n_spots=64, n_genes=10, seed=seed, sample=sample)
    table = sdata["table"]
    rng = np.random.default_rng(seed)
    latents = table.obs[["latent_colour", "latent_texture"]].to_numpy(dtype=np.float32)
    for um, noise in ((56, 0.3), (112, 0.1), (224, 0.5)):
        key = f"X_test_{um}um"
        table.obsm[key] = np.hstack(
            [latents, rng.normal(size=(table.n_obs, 4)).astype(np.float32)]
        ) + rng.normal(scale=noise, size=(table.n_obs, 6)).astype(np.float32)
        table.uns[key] = {"params": {"encoder": {"name": "test"}, "patch_um": float(um)}}
    return sdata


SCALES = ["X_test_56um", "X_test_112um", "X_test_224um"]
FAST = {"max_epochs": 4, "batch_size": 32, "hidden": 16}


@pytest.fixture
def sections():
    return [_section(i, f"s{i}") for i in range(4)]


def test_multiscale_learns_expression_and_tumor(sections):
    model = ht.tl.fit_predictor(
        sections[:3],
        method="hist_multiscale",
        genes=6,
        use_rep=SCALES,
        max_epochs=40,
        batch_size=32,
        hidden=32,
        lr=3e-3,
    )
    assert model.history["validation_section"] and len(model.history["train_loss"]) >= 1
    predicted = ht.tl.predict_expression(sections[3], model)
    summary = ht.tl.evaluate(sections[3], key="predicted_hist_multiscale")
    assert summary["pearson"] > 0.4, summary
    table = sections[3]["table"]
    score = table.obs["tumor_score"].to_numpy()
    assert ((score >= 0) & (score <= 1)).all()
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(table.obs["tumor"].astype(bool), score) > 0.8
    assert predicted.shape == (64, 6)


def test_same_seed_same_model(sections):
    a = ht.tl.fit_predictor(sections[:2], method="hist_multiscale", genes=4, use_rep=SCALES, seed=3, **FAST)
    b = ht.tl.fit_predictor(sections[:2], method="hist_multiscale", genes=4, use_rep=SCALES, seed=3, **FAST)
    pd.testing.assert_frame_equal(a.predict(sections[3]), b.predict(sections[3]))


def test_save_load_identical_and_runtime_settings_not_saved(sections, tmp_path):
    model = ht.tl.fit_predictor(
        sections[:2],
        method="histospace",
        genes=4,
        use_rep="X_test_112um",
        progress=False,
        max_epochs=3,
        hidden=8,
    )
    path = model.save(tmp_path / "hs")
    loaded = ht.models.load(path)
    pd.testing.assert_frame_equal(loaded.predict(sections[3]), model.predict(sections[3]))
    assert "progress" not in loaded.config()["hparams"] and loaded.hparams["hidden"] == 8


def test_resume_after_interruption_equals_uninterrupted(sections, tmp_path):
    """Two epochs, then two more from the checkpoint, equal four epochs in one go."""
    kwargs = {"genes": 4, "use_rep": SCALES, "validation": False, "batch_size": 32, "hidden": 16, "seed": 1}
    straight = MultiScalePredictor(
        use_rep=SCALES, seed=1, max_epochs=4, validation=False, batch_size=32, hidden=16
    )
    straight.fit(
        sections[:2],
        genes=pd.Index(ht.tl.fit_predictor(sections[:2], method="ridge", genes=4, use_rep=SCALES).genes),
    )
    genes = straight.genes
    ckpt = tmp_path / "ckpt"
    first = MultiScalePredictor(
        use_rep=SCALES, seed=1, max_epochs=2, validation=False, batch_size=32, hidden=16, checkpoint_dir=ckpt
    )
    first.fit(sections[:2], genes=genes)
    assert (ckpt / "last.ckpt").is_file()
    resumed = MultiScalePredictor(
        use_rep=SCALES, seed=1, max_epochs=4, validation=False, batch_size=32, hidden=16, checkpoint_dir=ckpt
    )
    resumed.fit(sections[:2], genes=genes)
    np.testing.assert_allclose(
        resumed.predict(sections[3]).to_numpy(), straight.predict(sections[3]).to_numpy(), atol=1e-5
    )
    del kwargs


def test_validation_needs_two_sections(sections):
    with pytest.raises(ValueError, match="`validation=True` needs at least two training sections"):
        ht.tl.fit_predictor(
            sections[:1], method="histospace", genes=4, use_rep="X_test_112um", validation=True, max_epochs=1
        )


def test_histospace_on_a_feature_map(sections):
    for sd in sections[:3]:
        table = sd["table"]
        latents = table.obs[["latent_colour", "latent_texture"]].to_numpy(dtype=np.float32)
        maps = np.repeat(latents[:, :, None], 16, axis=2).reshape(table.n_obs, -1)  # 2 channels, 4 x 4
        table.obsm["X_map"] = maps + np.random.default_rng(0).normal(scale=0.05, size=maps.shape).astype(
            np.float32
        )
    model = ht.tl.fit_predictor(
        sections[:2],
        method="histospace",
        genes=4,
        use_rep="X_map",
        map_channels=2,
        hidden=16,
        max_epochs=20,
        lr=3e-3,
    )
    ht.tl.predict_expression(sections[2], model)
    assert ht.tl.evaluate(sections[2], key="predicted_histospace")["pearson"] > 0.4
    with pytest.raises(ValueError, match="not a square map of 3 channels"):
        ht.tl.fit_predictor(
            sections[:1], method="histospace", genes=4, use_rep="X_map", map_channels=3, max_epochs=1
        )


def test_truncated_last_checkpoint_is_refused_naming_the_file(sections, tmp_path):
    """A run killed while writing last.ckpt leaves it truncated: resuming says which file to delete."""
    ckpt = tmp_path / "ckpt"
    kwargs = {"use_rep": SCALES, "seed": 1, "validation": False, "batch_size": 32, "hidden": 8}
    genes = ["gene_000", "gene_001"]
    MultiScalePredictor(max_epochs=1, checkpoint_dir=ckpt, **kwargs).fit(sections[:2], genes=genes)
    last = ckpt / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(
        ValueError, match=r"Cannot resume training from '.*last\.ckpt': the checkpoint is truncated or corrupted"
    ) as error:
        MultiScalePredictor(max_epochs=2, checkpoint_dir=ckpt, **kwargs).fit(sections[:2], genes=genes)
    assert "Delete it to restart training from the first epoch" in str(error.value)
    last.unlink()  # as the message says: training then starts over
    model = MultiScalePredictor(max_epochs=2, checkpoint_dir=ckpt, **kwargs).fit(sections[:2], genes=genes)
    assert len(model.history["train_loss"]) == 2
