"""Patches at physical size and image features streamed through an encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import hist2st_tk as ht
from hist2st_tk._constants import ATTRS_KEY
from hist2st_tk._image import ImageReader, PatchDataset
from hist2st_tk.encoders import EncoderSpec, register_encoder
from hist2st_tk.pp._patches import patch_layout


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
    ht.pp.image_features(
        section, encoder="mean_colour", patch_um=40, stain=False, key_added="X_raw", progress=False
    )
    table = section["table"]
    assert table.uns["X_mean_colour"]["params"]["stain"] == "macenko"
    assert table.uns["X_raw"]["params"]["stain"] is None
    assert not np.allclose(table.obsm["X_mean_colour"], table.obsm["X_raw"], atol=1e-3)
    # the features are those of the normalised patches
    layout, dataset = _dataset(section, 40, 40)
    normalise = ht.pp.stain_normalizer(section, "synthetic_he")
    expected = normalise(dataset.patch(0)).reshape(-1, 3).mean(axis=0) / 255
    np.testing.assert_allclose(table.obsm["X_mean_colour"][0], expected, atol=1e-5)


# --- several patch sizes in one pass: each spot's largest patch is read once, the smaller ones cut out of it


def _reference_patch(image: np.ndarray, centre, *, side_px: float, render_px, out_px: int) -> np.ndarray:
    """A patch computed the plain way: pad the whole image with white, crop, resample (PIL bilinear)."""
    size = max(int(round(side_px)), 1)
    x0, y0 = (int(v) for v in np.rint(np.asarray(centre) - size / 2))
    pad = size + 2
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), constant_values=255)
    crop = padded[y0 + pad : y0 + pad + size, x0 + pad : x0 + pad + size]
    if render_px is not None and render_px < size:
        crop = np.asarray(Image.fromarray(crop).resize((render_px, render_px), Image.BILINEAR))
    if crop.shape[0] != out_px:
        crop = np.asarray(Image.fromarray(crop).resize((out_px, out_px), Image.BILINEAR))
    return crop


@pytest.mark.parametrize("working_mpp", [None, 1.6])
def test_multiscale_patches_equal_the_plain_crops_of_each_size(working_mpp):
    from hist2st_tk._image import MultiScalePatchDataset

    sdata = ht.datasets.synthetic(n_spots=9, n_genes=4, seed=1, mpp=0.5)
    image = _image(sdata)
    level = sdata.images["synthetic_he"]
    reader = ImageReader(level).load()
    sizes = [33.3, 56, 90.7, 520]  # odd pixel sizes; 520 um (past the 500 um image) is padded everywhere
    layouts = [patch_layout(sdata, um, input_px=48, working_mpp=working_mpp) for um in sizes]
    assert layouts[-1].padded.all() and not layouts[0].padded.any()
    datasets = [PatchDataset(layout, reader, out_px=48) for layout in layouts]
    multi = MultiScalePatchDataset(datasets)
    assert multi.sources == [3, 3, 3, 3] and all(inside.all() for inside in multi.inside)
    for i in range(len(multi)):
        patches = multi.patches(i)
        items = multi[i]
        for layout, dataset, patch, item in zip(layouts, datasets, patches, items, strict=True):
            expected = _reference_patch(
                image, layout.centres[i], side_px=layout.side_px, render_px=layout.render_px, out_px=48
            )
            np.testing.assert_array_equal(patch, expected)
            np.testing.assert_array_equal(patch, dataset.patch(i))
            np.testing.assert_array_equal(item.numpy().transpose(1, 2, 0), expected)


@pytest.mark.parametrize(
    ("encoder", "kwargs"),
    [
        ("mean_colour", {"working_mpp": 1.6, "batch_size": 3}),
        ("handcrafted", {}),
        ("lite0", {"working_mpp": 1.6, "batch_size": 4}),
    ],
)
def test_multiscale_features_equal_each_size_encoded_alone(encoder, kwargs):
    sizes = [40.0, 80.0, 160.0]
    together = ht.datasets.synthetic(n_spots=6, n_genes=4, seed=2, mpp=0.5)
    ht.pp.image_features(together, encoder=encoder, patch_um=sizes, progress=False, **kwargs)
    alone = ht.datasets.synthetic(n_spots=6, n_genes=4, seed=2, mpp=0.5)
    for um in sizes:
        key = f"X_{um:g}"
        ht.pp.image_features(alone, encoder=encoder, patch_um=um, key_added=key, progress=False, **kwargs)
        got, expected = together["table"], alone["table"]
        # the same patches in the same batches: the same numbers, not merely close ones
        np.testing.assert_array_equal(got.obsm[f"X_{encoder}_{um:g}um"], expected.obsm[key])
        params, reference = (t.uns[k]["params"] for t, k in ((got, f"X_{encoder}_{um:g}um"), (expected, key)))
        assert params.keys() == reference.keys()
        assert {k: v for k, v in params.items() if k != "patches_per_s"} == {
            k: v for k, v in reference.items() if k != "patches_per_s"
        }
        assert params["patches_per_s"] > 0


def _counting_pyramid(sdata, calls: list):
    """The section's image as a lazily decoded file would be: one delayed task (counted in ``calls``)
    holding the whole image, rechunked, with two coarser pyramid levels."""
    import dask
    import dask.array as da
    from spatialdata.models import Image2DModel

    image = sdata.images["synthetic_he"]
    pixels = np.asarray(image.data.compute())

    def decode():
        calls.append(1)
        return pixels.copy()

    lazy = da.from_delayed(dask.delayed(decode)(), shape=pixels.shape, dtype=pixels.dtype).rechunk(
        (3, 64, 64)
    )
    return Image2DModel.parse(
        lazy, dims=("c", "y", "x"), scale_factors=[2, 2], transformations=image.attrs["transform"]
    )


def test_the_image_is_decoded_once_for_all_sizes_and_levels():
    sdata = ht.datasets.synthetic(n_spots=9, n_genes=4, mpp=0.25)
    plain = ht.datasets.synthetic(n_spots=9, n_genes=4, mpp=0.25)
    calls: list = []
    pyramid = _counting_pyramid(sdata, calls)
    sdata.images["synthetic_he"] = plain.images["synthetic_he"] = pyramid
    sizes = [10, 25, 100]  # 40, 100 and 400 px with 40 px inputs: levels 0, 1 and 2
    ht.pp.image_features(sdata, encoder="mean_colour", patch_um=sizes, progress=False)
    assert [sdata["table"].uns[f"X_mean_colour_{um}um"]["params"]["level"] for um in sizes] == [0, 1, 2]
    assert len(calls) == 1
    for um in sizes:  # each level's patches are still those of reading that size alone
        ht.pp.image_features(plain, encoder="mean_colour", patch_um=um, key_added="X_alone", progress=False)
        np.testing.assert_array_equal(
            sdata["table"].obsm[f"X_mean_colour_{um}um"], plain["table"].obsm["X_alone"]
        )


def test_a_line_is_logged_before_the_encoder_and_image_are_loaded(section, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="hist2st_tk"):
        ht.pp.image_features(
            section, encoder="mean_colour", patch_um=[40, 80], working_mpp=2.0, progress=False
        )
    first = caplog.records[0].getMessage()
    assert first.startswith("image features of 16 spots (mean_colour, 40/80 um patches at 2 um/px)")


def test_cpu_passes_split_batches_without_changing_the_features(monkeypatch):
    from hist2st_tk.pp import _features
    from hist2st_tk.pp._features import encoder_passes

    cpu = torch.device("cpu")
    assert [len(p) for p in encoder_passes(torch.zeros(10, 3, 224, 224), cpu)] == [4, 4, 2]
    assert [len(p) for p in encoder_passes(torch.zeros(10, 3, 40, 40), cpu)] == [10]
    assert [len(p) for p in encoder_passes(torch.zeros(5, 3, 1024, 1024), cpu)] == [2, 2, 1]
    sections = {}
    for name, pixels in (("passes", _features.CPU_PASS_PIXELS), ("whole", None)):
        monkeypatch.setattr(_features, "CPU_PASS_PIXELS", pixels)
        sections[name] = ht.datasets.synthetic(n_spots=11, n_genes=4, seed=4)
        for encoder in ("lite0", "handcrafted"):
            ht.pp.image_features(
                sections[name], encoder=encoder, patch_um=[40, 80], batch_size=9, progress=False
            )
    for key in ("X_lite0_40um", "X_lite0_80um", "X_handcrafted_40um", "X_handcrafted_80um"):
        # equal up to float32 rounding (in practice bit for bit on x86 CPUs)
        np.testing.assert_allclose(
            sections["passes"]["table"].obsm[key], sections["whole"]["table"].obsm[key], rtol=1e-5, atol=1e-5
        )


def test_lite0_features_equal_a_plain_reference():
    """Several sizes at a working resolution against the plainest computation: pad the whole image, crop,
    resample with PIL, normalise and encode all patches of a size in one forward pass."""
    from hist2st_tk.encoders import build_encoder

    sizes, working_mpp = [40.0, 100.0, 220.0], 1.6
    sdata = ht.datasets.synthetic(n_spots=6, n_genes=4, seed=5, mpp=0.5)
    ht.pp.image_features(sdata, encoder="lite0", patch_um=sizes, working_mpp=working_mpp, progress=False)
    module, spec = build_encoder("lite0")
    image = _image(sdata)
    for um in sizes:
        layout = patch_layout(sdata, um, input_px=spec.input_px, working_mpp=working_mpp)
        patches = np.stack(
            [
                _reference_patch(image, c, side_px=um / 0.5, render_px=layout.render_px, out_px=spec.input_px)
                for c in layout.centres
            ]
        )
        x = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255.0
        x = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
        with torch.inference_mode():
            expected = module(x).numpy()
        # float32 rounding of another memory layout and pass size: |difference| ~1e-5 on features ~1-5
        np.testing.assert_allclose(sdata["table"].obsm[f"X_lite0_{um:g}um"], expected, rtol=1e-4, atol=1e-4)


def test_multiscale_patches_fall_back_to_each_size_when_the_largest_is_unreadable(section):
    from hist2st_tk._image import MultiScalePatchDataset, UnreadableImageError

    class PartlyBroken(ImageReader):
        """A reader whose crops wider than 60 px touch a corrupted part of the file."""

        def crop(self, x0, y0, size):
            if size > 60:
                raise UnreadableImageError("corrupted")
            return super().crop(x0, y0, size)

    reader = PartlyBroken(section.images["synthetic_he"]).load()
    small, big = (PatchDataset(patch_layout(section, um, input_px=40), reader, out_px=40) for um in (40, 80))
    multi = MultiScalePatchDataset([small, big])
    assert multi.sources == [1, 1]
    with pytest.raises(UnreadableImageError):  # as reading the 80 um patch alone does
        multi.patches(0)
    np.testing.assert_array_equal(MultiScalePatchDataset([small]).patches(0)[0], small.patch(0))
    calls = []
    small.crop = lambda index: calls.append(index) or PatchDataset.crop(small, index)
    with pytest.raises(UnreadableImageError):
        multi.patches(2)
    assert calls == [2]  # the 40 um patch was read by itself once the 80 um one could not be
