"""Patches at physical size and image features streamed through an encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import hist2st_tk as ht
from hist2st_tk._constants import ATTRS_KEY
from hist2st_tk.encoders import EncoderSpec, register_encoder
from hist2st_tk.pp._patches import ImageReader, PatchDataset, patch_layout


class MeanColour(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


def _build_mean_colour(spec, weights):
    return MeanColour()


register_encoder(
    EncoderSpec(
        name="mean_colour",
        input_px=40,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        out_dim=3,
        licence="test",
        weights="none",
        build=_build_mean_colour,
    ),
    overwrite=True,
)


@pytest.fixture
def section():
    return ht.datasets.synthetic(n_spots=16, n_genes=4, seed=3)


def _image(sdata) -> np.ndarray:
    return np.asarray(sdata.images["synthetic_he"].data.compute()).transpose(1, 2, 0)


def _dataset(sdata, patch_um, input_px):
    layout = patch_layout(sdata, patch_um, input_px=input_px)
    level = sdata.images[layout.image_key]
    return layout, PatchDataset(layout, ImageReader(level), out_px=input_px)


def test_patch_is_the_crop_centred_on_the_spot(section):
    layout, dataset = _dataset(section, 40, 40)
    image = _image(section)
    for i in (0, 5, 15):
        cx, cy = layout.centres[i]
        x0, y0 = round(cx - 20), round(cy - 20)
        np.testing.assert_array_equal(dataset.patch(i), image[y0 : y0 + 40, x0 : x0 + 40])
    assert dataset[0].shape == (3, 40, 40) and dataset[0].dtype == torch.uint8


def test_patch_is_resampled_to_the_input_size(section):
    layout, dataset = _dataset(section, 80, 40)
    cx, cy = layout.centres[3]
    x0, y0 = round(cx - 40), round(cy - 40)
    crop = _image(section)[y0 : y0 + 80, x0 : x0 + 80]
    expected = np.asarray(Image.fromarray(crop).resize((40, 40), Image.BILINEAR))
    np.testing.assert_array_equal(dataset.patch(3), expected)


def test_patches_past_the_border_are_white_and_flagged(section):
    layout, dataset = _dataset(section, 520, 40)  # wider than the 600 px image
    assert layout.padded.all()
    corner = int(np.argmin(layout.centres.sum(axis=1)))
    assert (dataset.patch(corner)[:2, :2] == 255).all()
    keys = ht.pp.patches(section, patch_um=[520, 40])
    assert keys == ["synthetic_spots_patches_520um", "synthetic_spots_patches_40um"]
    assert section.shapes[keys[0]]["padded"].all()
    assert not section.shapes[keys[1]]["padded"].any()
    square = section.shapes[keys[1]].geometry.iloc[0]
    assert square.area == pytest.approx(40 * 40)


def test_coarsest_sufficient_level_is_read():
    from spatialdata.models import Image2DModel

    sdata = ht.datasets.synthetic(n_spots=4, n_genes=4, mpp=0.25)
    image = sdata.images["synthetic_he"]
    sdata.images["synthetic_he"] = Image2DModel.parse(
        image.data, dims=("c", "y", "x"), scale_factors=[2, 2], transformations=image.attrs["transform"]
    )
    layout = patch_layout(sdata, 100, input_px=64)  # 400 px at full resolution: level 2 has 100 px
    assert (layout.level, layout.downscale) == (2, 4.0)
    levels = ht._sdata.image_levels(sdata.images["synthetic_he"])
    coarse = PatchDataset(layout, ImageReader(levels[2]), out_px=64).patch(0).astype(float)
    full = patch_layout(sdata, 100, input_px=1000)
    fine = PatchDataset(full, ImageReader(levels[0]), out_px=64).patch(0).astype(float)
    assert full.level == 0
    assert np.abs(coarse - fine).mean() < 8


def test_image_features_writes_features_params_and_shapes(section):
    ht.pp.image_features(section, encoder="mean_colour", patch_um=40, progress=False)
    table = section["table"]
    features = table.obsm["X_mean_colour"]
    assert features.shape == (16, 3) and features.dtype == np.float32
    layout, dataset = _dataset(section, 40, 40)
    expected = np.stack([dataset.patch(i).reshape(-1, 3).mean(axis=0) / 255 for i in range(16)])
    np.testing.assert_allclose(features, expected, atol=1e-5)
    params = table.uns["X_mean_colour"]["params"]
    assert params["encoder"]["name"] == "mean_colour"
    assert (params["patch_um"], params["mpp"], params["mpp_source"]) == (40.0, 1.0, "user")
    assert params["patch_px"] == pytest.approx(40.0) and params["n_padded"] == 0
    assert params["stain"] is None
    assert "synthetic_spots_patches_40um" in section.shapes


def test_features_follow_the_spot_not_the_row_order(section):
    reference = ht.datasets.synthetic(n_spots=16, n_genes=4, seed=3)
    ht.pp.image_features(reference, encoder="mean_colour", patch_um=40, progress=False)
    shuffled = section["table"][np.random.default_rng(0).permutation(16)].copy()
    section.tables["table"] = shuffled
    ht.pp.image_features(section, encoder="mean_colour", patch_um=40, progress=False)
    by_id = dict(
        zip(reference["table"].obs["spot_id"], reference["table"].obsm["X_mean_colour"], strict=True)
    )
    for spot, row in zip(shuffled.obs["spot_id"], section["table"].obsm["X_mean_colour"], strict=True):
        np.testing.assert_allclose(row, by_id[spot])


def test_multiscale_features_and_workers(section):
    ht.pp.image_features(section, encoder="mean_colour", patch_um=[40, 80], progress=False)
    table = section["table"]
    assert {"X_mean_colour_40um", "X_mean_colour_80um"} <= set(table.obsm)
    assert table.uns["X_mean_colour_80um"]["params"]["patch_um"] == 80.0
    ht.pp.image_features(
        section, encoder="mean_colour", patch_um=40, num_workers=1, key_added="X_workers", progress=False
    )
    np.testing.assert_allclose(table.obsm["X_workers"], table.obsm["X_mean_colour_40um"])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"encoder": "nope"}, ValueError, r"Unknown encoder 'nope'.*'lite0'"),
        ({"patch_um": 0}, ValueError, "`patch_um` must be a positive, finite number"),
        ({"patch_um": -5.0}, ValueError, "`patch_um` must be a positive, finite number"),
        ({"patch_um": "112"}, TypeError, "`patch_um` must be a positive number"),
        ({"patch_um": []}, ValueError, "non-empty sequence"),
        ({"batch_size": 0}, ValueError, "`batch_size` must be at least 1"),
        ({"num_workers": -1}, ValueError, "`num_workers` must be an integer >= 0"),
        ({"stain": True}, ValueError, r"no stain normaliser is recorded.*normalize_stain"),
        ({"device": "tpu9"}, ValueError, "Unknown `device`"),
        ({"table_key": "nope"}, KeyError, "No table 'nope'"),
    ],
)
def test_bad_input_writes_nothing(section, kwargs, error, match):
    before_obsm, before_shapes = set(section["table"].obsm), set(section.shapes)
    with pytest.raises(error, match=match):
        ht.pp.image_features(section, **{"encoder": "mean_colour", "progress": False, **kwargs})
    assert set(section["table"].obsm) == before_obsm and set(section.shapes) == before_shapes


def test_image_without_mpp_is_refused(section):
    del section.attrs[ATTRS_KEY]["mpp"]["synthetic_he"]
    with pytest.raises(KeyError, match=r"microns per pixel of image 'synthetic_he' is unknown.*set_mpp"):
        ht.pp.image_features(section, encoder="mean_colour", progress=False)
    assert "X_mean_colour" not in section["table"].obsm


def test_encoder_returning_nan_is_refused():
    from hist2st_tk.pp._features import encode

    class Broken(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3)) * float("nan")

    dataset = [torch.zeros(3, 8, 8, dtype=torch.uint8)] * 2
    with pytest.raises(ValueError, match="NaN or infinite features"):
        encode(Broken(), dataset, mean=(0, 0, 0), std=(1, 1, 1), batch_size=2)


def test_weight_free_encoders_and_fourier_features(section):
    ht.pp.image_features(section, encoder="handcrafted", patch_um=56, progress=False)
    ht.pp.fourier_features(section, patch_um=56, progress=False)
    table = section["table"]
    assert table.obsm["X_handcrafted"].shape == (16, 22)
    assert table.obsm["X_fourier"].shape == (16, 16)
    assert table.uns["X_fourier"]["params"]["encoder"]["name"] == "fft"
    # denser nuclei (the hidden texture factor) show up in the haematoxylin fraction
    from hist2st_tk.encoders._handcrafted import HandcraftedFeatures

    names = HandcraftedFeatures().feature_names
    h_fraction = table.obsm["X_handcrafted"][:, names.index("haematoxylin_fraction")]
    assert np.corrcoef(h_fraction, table.obs["latent_texture"])[0, 1] > 0.3


def test_recorded_stain_normaliser_is_applied_per_patch(section):
    ht.pp.normalize_stain(section, method="macenko")
    ht.pp.image_features(section, encoder="mean_colour", patch_um=40, progress=False)
    ht.pp.image_features(section, encoder="mean_colour", patch_um=40, stain=False, key_added="X_raw", progress=False)
    table = section["table"]
    assert table.uns["X_mean_colour"]["params"]["stain"] == "macenko"
    assert table.uns["X_raw"]["params"]["stain"] is None
    assert not np.allclose(table.obsm["X_mean_colour"], table.obsm["X_raw"], atol=1e-3)
    # the features are those of the normalised patches
    layout, dataset = _dataset(section, 40, 40)
    normalise = ht.pp.stain_normalizer(section, "synthetic_he")
    expected = normalise(dataset.patch(0)).reshape(-1, 3).mean(axis=0) / 255
    np.testing.assert_allclose(table.obsm["X_mean_colour"][0], expected, atol=1e-5)
