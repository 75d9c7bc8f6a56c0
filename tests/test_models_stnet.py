"""ST-Net: fine-tuning an encoder end to end on patches read from the image."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import hist2st_tk as ht
from hist2st_tk.encoders import EncoderSpec, register_encoder
from hist2st_tk.models._stnet import augment_he


def _tiny_cnn(spec, weights):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )


register_encoder(
    EncoderSpec(
        name="tiny_cnn",
        input_px=32,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        out_dim=8,
        licence="test",
        weights="random",
        build=_tiny_cnn,
    ),
    overwrite=True,
)
FAST = {"encoder": "tiny_cnn", "patch_um": 64.0, "batch_size": 16, "max_epochs": 3, "lr": 1e-2}


@pytest.fixture(scope="module")
def sections():
    return [ht.datasets.synthetic(n_spots=36, n_genes=6, seed=s, sample=f"s{s}") for s in range(3)]


def test_stnet_learns_from_the_image(sections):
    model = ht.tl.fit_predictor(sections[:2], method="stnet", genes=3, **{**FAST, "max_epochs": 12})
    assert model.inputs == {"patches": {"encoder": "tiny_cnn", "patch_um": 64.0}}
    assert len(model.history["train_loss"]) >= 1 and model.history["validation_section"]
    predicted = model.predict(sections[2])
    observed = sections[2]["table"][:, model.genes].X
    observed = observed.toarray() if hasattr(observed, "toarray") else observed
    r = [np.corrcoef(predicted.iloc[:, g], observed[:, g])[0, 1] for g in range(3)]
    assert np.nanmean(r) > 0.3, r


def test_stnet_save_load_identical(sections, tmp_path):
    model = ht.tl.fit_predictor(sections[:1], method="stnet", genes=2, **FAST)
    loaded = ht.models.load(model.save(tmp_path / "stnet"))
    pd.testing.assert_frame_equal(loaded.predict(sections[2]), model.predict(sections[2]))


def test_stnet_takes_no_features(sections):
    with pytest.raises(TypeError, match="reads the patches from the image"):
        ht.tl.fit_predictor(sections[:1], method="stnet", genes=2, use_rep="X_lite0", **FAST)


def test_augmentation_is_dihedral_and_mild():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    torch.manual_seed(1)
    y = augment_he(x, colour=0.0)
    assert y.dtype == torch.float32 and y.shape == x.shape
    # without colour jitter every output is one of the eight dihedral images of its input
    for image, out in zip(x.float() / 255, y, strict=True):
        candidates = [torch.rot90(im, k, dims=(-2, -1)) for im in (image, image.flip(-1)) for k in range(4)]
        assert any(torch.allclose(out, c) for c in candidates)
    torch.manual_seed(1)  # the same transforms, now with colour jitter
    jittered = augment_he(x, colour=0.05)
    assert (jittered - y).abs().max() <= 0.2 and jittered.min() >= 0 and jittered.max() <= 1
