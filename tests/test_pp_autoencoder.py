"""Self-supervised autoencoder on the sections' patches, used as an encoder and by histospace."""

from __future__ import annotations

import json

import numpy as np
import pytest

import hist2st_tk as ht


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    sections = [ht.datasets.synthetic(n_spots=36, n_genes=6, seed=s, sample=f"s{s}") for s in (0, 1)]
    path = ht.pp.fit_autoencoder(
        sections,
        tmp_path_factory.mktemp("ae") / "ae",
        patch_um=64,
        tile_px=32,
        epochs=2,
        batch_size=16,
        progress=False,
    )
    return sections, path


def test_fit_autoencoder_saves_provenance(trained):
    _, path = trained
    config = json.loads((path / "autoencoder.json").read_text())
    assert config["input_px"] == 32
    metadata = config["metadata"]
    assert metadata["patch_um"] == 64.0 and metadata["epochs"] == 2 and len(metadata["train_loss"]) == 2
    assert [s["image_key"] for s in metadata["sections"]] == ["s0_he", "s1_he"]


def test_autoencoder_as_encoder_and_feature_map(trained):
    sections, path = trained
    sdata = sections[0]
    ht.pp.image_features(sdata, encoder="autoencoder", weights=path, patch_um=64, progress=False)
    ht.pp.image_features(sdata, encoder="autoencoder_map", weights=path, patch_um=64, progress=False)
    table = sdata["table"]
    assert table.obsm["X_autoencoder"].shape == (36, 128)
    assert table.obsm["X_autoencoder_map"].shape == (36, 128 * 4 * 4)
    params = table.uns["X_autoencoder_map"]["params"]["encoder"]
    assert params["input_px"] == 32 and params["map_channels"] == 128
    # the pooled vector is the mean of the map over its 4 x 4 positions
    maps = table.obsm["X_autoencoder_map"].reshape(36, 128, 16)
    np.testing.assert_allclose(maps.mean(axis=2), table.obsm["X_autoencoder"], atol=1e-5)


def test_histospace_on_the_autoencoder_map(trained):
    sections, path = trained
    for sdata in sections:
        ht.pp.image_features(sdata, encoder="autoencoder_map", weights=path, patch_um=64, progress=False)
    model = ht.tl.fit_predictor(
        sections[:1],
        method="histospace",
        genes=3,
        use_rep="X_autoencoder_map",
        map_channels=128,
        max_epochs=2,
        hidden=8,
    )
    assert ht.tl.predict_expression(sections[1], model).shape == (36, 3)


def test_fit_autoencoder_bad_input(trained, tmp_path):
    sections, path = trained
    with pytest.raises(ValueError, match="`tile_px` must be a multiple of 8"):
        ht.pp.fit_autoencoder(sections, tmp_path / "x", tile_px=30)
    with pytest.raises(FileExistsError, match="already exists"):
        ht.pp.fit_autoencoder(sections, path, tile_px=32)
    with pytest.raises(ValueError, match="`sdatas` is empty"):
        ht.pp.fit_autoencoder([], tmp_path / "y")
    with pytest.raises(ValueError, match="`patch_um` must be a positive"):
        ht.pp.fit_autoencoder(sections, tmp_path / "z", patch_um=-1)
    assert not (tmp_path / "x").exists()
