"""The synthetic section: the reader contract, reproducibility, and a known image-to-expression link."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from hist2st_tk.datasets._synthetic import synthetic
from hist2st_tk.io import get_mpp

#: Pixels darker than this (mean over channels) are nuclei; tissue and glass are much brighter.
DARK = 100


@pytest.fixture(scope="module")
def sdata():
    return synthetic()


def _image(sdata, sample: str = "synthetic") -> np.ndarray:
    from spatialdata import get_pyramid_levels
    from xarray import DataTree

    image = sdata[f"{sample}_he"]
    if isinstance(image, DataTree):
        image = get_pyramid_levels(image, n=0)
    return np.asarray(image.values)


def _cells(image: np.ndarray, xy: np.ndarray, pitch: float) -> list[np.ndarray]:
    """The pitch x pitch square of pixels around each spot centre, as float ``(3, y, x)``."""
    half = pitch / 2
    return [
        image[:, round(y - half) : round(y + half), round(x - half) : round(x + half)].astype(np.float64)
        for x, y in xy
    ]


def test_elements_follow_the_reader_contract(sdata):
    from spatialdata import match_table_to_element
    from spatialdata.models import get_table_keys

    assert list(sdata.images) == ["synthetic_he"]
    assert list(sdata.shapes) == ["synthetic_spots"]
    assert list(sdata.tables) == ["table"]

    image = _image(sdata)
    assert image.dtype == np.uint8
    assert image.shape == (3, 1200, 1200)  # 10 x 10 grid of 100 px cells + one pitch of margin
    assert tuple(sdata["synthetic_he"].dims) == ("c", "y", "x")

    spots = sdata["synthetic_spots"]
    assert list(spots.index[:2]) == ["spot_0000", "spot_0001"]
    np.testing.assert_allclose(spots["radius"], 27.5)

    table = sdata["table"]
    assert table.shape == (100, 30)
    assert list(table.var_names[:2]) == ["gene_000", "gene_001"]
    _, region_key, instance_key = get_table_keys(table)
    assert (region_key, instance_key) == ("region", "spot_id")
    matched = match_table_to_element(sdata, "synthetic_spots")
    assert list(matched.obs["spot_id"]) == list(spots.index)
    assert (table.obs["sample"] == "synthetic").all()
    assert (table.obs["patient"] == "synthetic").all()

    counts = table.layers["counts"].toarray()
    np.testing.assert_array_equal(counts, np.round(counts))
    np.testing.assert_allclose(np.expm1(table.X.toarray()).sum(axis=1), 1e4, rtol=1e-3)
    centres = np.column_stack([spots.geometry.x, spots.geometry.y])
    np.testing.assert_allclose(table.obsm["spatial"], centres)

    assert get_mpp(sdata) == (1.0, "user")


def test_truth_is_stored(sdata):
    obs, var = sdata["table"].obs, sdata["table"].var
    for key in ("latent_colour", "latent_texture"):
        assert obs[key].between(0, 1).all()
        assert obs[key].std() > 0.15  # the latents vary over the section
    assert obs["tumor"].dtype == "boolean"
    np.testing.assert_array_equal(obs["tumor"].to_numpy(bool), obs["latent_colour"].to_numpy() > 0.5)
    assert 0 < obs["tumor"].mean() < 1
    colour_only = (var["weight_colour"] != 0) & (var["weight_texture"] == 0)
    texture_only = (var["weight_colour"] == 0) & (var["weight_texture"] != 0)
    noise = (var["weight_colour"] == 0) & (var["weight_texture"] == 0)
    assert colour_only.sum() >= 5 and texture_only.sum() >= 5 and noise.sum() >= 3
    weights = var.loc[~noise, ["weight_colour", "weight_texture"]].abs().to_numpy()
    assert ((weights == 0) | ((weights >= 1) & (weights <= 2))).all()


def test_patient_and_sample_names():
    sdata = synthetic(9, 3, sample="S1", patient="P7")
    assert set(sdata.images) == {"S1_he"} and set(sdata.shapes) == {"S1_spots"}
    obs = sdata["table"].obs
    assert (obs["sample"] == "S1").all() and (obs["patient"] == "P7").all()
    assert (obs["region"] == "S1_spots").all()


def test_same_seed_same_section_other_seed_differs(sdata):
    again, other = synthetic(), synthetic(seed=1)
    np.testing.assert_array_equal(_image(again), _image(sdata))
    np.testing.assert_array_equal(
        again["table"].layers["counts"].toarray(), sdata["table"].layers["counts"].toarray()
    )
    pd.testing.assert_frame_equal(again["table"].obs, sdata["table"].obs)
    pd.testing.assert_frame_equal(again["table"].var, sdata["table"].var)

    assert not np.array_equal(_image(other), _image(sdata))
    assert not np.allclose(other["table"].obs["latent_colour"], sdata["table"].obs["latent_colour"])
    assert not np.array_equal(
        other["table"].layers["counts"].toarray(), sdata["table"].layers["counts"].toarray()
    )


def test_mpp_changes_only_the_image(sdata):
    fine = synthetic(mpp=0.5)
    assert get_mpp(fine) == (0.5, "user")
    assert _image(fine).shape == (3, 2400, 2400)
    np.testing.assert_allclose(fine["synthetic_spots"]["radius"], 55.0)
    np.testing.assert_allclose(fine["table"].obsm["spatial"], 2 * sdata["table"].obsm["spatial"])
    np.testing.assert_array_equal(
        fine["table"].layers["counts"].toarray(), sdata["table"].layers["counts"].toarray()
    )
    pd.testing.assert_series_equal(fine["table"].obs["latent_colour"], sdata["table"].obs["latent_colour"])


def test_expression_is_a_function_of_the_latents(sdata):
    table = sdata["table"]
    obs, var = table.obs, table.var
    log_expression = table.X.toarray()
    log_counts = np.log1p(table.layers["counts"].toarray())
    for latent, other in (("colour", "texture"), ("texture", "colour")):
        weight = var[f"weight_{latent}"].where(var[f"weight_{other}"] == 0, 0.0)
        gene = var.index.get_loc(weight.abs().idxmax())
        rho = spearmanr(log_expression[:, gene], obs[f"latent_{latent}"]).statistic
        assert rho * np.sign(weight.iloc[gene]) > 0.7, (latent, rho)
        # the two smooth fields are independent but can correlate by chance over one small section
        assert abs(spearmanr(log_expression[:, gene], obs[f"latent_{other}"]).statistic) < abs(rho)

    # the rates are exactly the stored linear model; noise genes do not follow the latents
    latents = obs[["latent_colour", "latent_texture"]].to_numpy()
    rate = np.exp(
        var["intercept"].to_numpy() + latents @ var[["weight_colour", "weight_texture"]].to_numpy().T
    )
    signal = ((var["weight_colour"] != 0) | (var["weight_texture"] != 0)).to_numpy()
    per_gene = [spearmanr(log_counts[:, g], np.log(rate[:, g])).statistic for g in np.flatnonzero(signal)]
    assert np.mean(per_gene) > 0.7
    for g in np.flatnonzero(~signal):
        for key in ("latent_colour", "latent_texture"):
            assert abs(spearmanr(log_counts[:, g], obs[key]).statistic) < 0.4


def test_image_encodes_the_latents(sdata):
    obs = sdata["table"].obs
    red, dark = [], []
    for cell in _cells(_image(sdata), sdata["table"].obsm["spatial"], pitch=100):
        is_dark = cell.mean(axis=0) < DARK
        dark.append(is_dark.mean())
        red.append(cell[0][~is_dark].mean())
    # purple (colour 1) has less red than pink (colour 0)
    assert spearmanr(red, obs["latent_colour"]).statistic < -0.95
    rho_texture = spearmanr(dark, obs["latent_texture"]).statistic
    assert rho_texture > 0.8
    assert abs(spearmanr(dark, obs["latent_colour"]).statistic) < rho_texture


def test_shuffled_image_loses_the_link(sdata):
    obs = sdata["table"].obs
    cells = _cells(_image(sdata), sdata["table"].obsm["spatial"], pitch=100)
    green = np.array([cell[1].mean() for cell in cells])
    shuffled = np.random.default_rng(0).permutation(green)
    assert abs(spearmanr(green, obs["latent_colour"]).statistic) > 0.9
    assert abs(spearmanr(shuffled, obs["latent_colour"]).statistic) < 0.4


def test_spots_lie_inside_tissue_with_a_glass_margin(sdata):
    image = _image(sdata)
    _, height, width = image.shape
    spots = sdata["synthetic_spots"]
    x, y, r = spots.geometry.x.to_numpy(), spots.geometry.y.to_numpy(), spots["radius"].to_numpy()
    # one pitch (100 px) of glass beyond each spot's cell, i.e. 150 px from the centre to the border
    assert (x - 150 >= -1e-9).all() and (x + 150 <= width + 1e-9).all()
    assert (y - 150 >= -1e-9).all() and (y + 150 <= height + 1e-9).all()
    assert (r < 50).all()
    glass = image[:, :100].reshape(3, -1).mean(axis=1)
    assert (glass > 230).all()


def test_neighbouring_spots_are_alike(sdata):
    obs = sdata["table"].obs
    grid = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(obs["array_x"], obs["array_y"], strict=True))}
    pairs = np.array([(i, grid[(a + 1, b)]) for (a, b), i in grid.items() if (a + 1, b) in grid])
    random_pairs = np.random.default_rng(0).integers(0, len(obs), size=(500, 2))
    for key in ("latent_colour", "latent_texture"):
        values = obs[key].to_numpy()
        neighbours = np.abs(values[pairs[:, 0]] - values[pairs[:, 1]]).mean()
        anywhere = np.abs(values[random_pairs[:, 0]] - values[random_pairs[:, 1]]).mean()
        assert neighbours < 0.7 * anywhere


@pytest.mark.parametrize(
    ("n_spots", "n_genes", "shape"), [(1, 1, (3, 300, 300)), (7, 2, (3, 500, 500)), (10, 4, (3, 500, 600))]
)
def test_small_and_non_square_sections(n_spots, n_genes, shape):
    sdata = synthetic(n_spots, n_genes)
    assert sdata["table"].shape == (n_spots, n_genes)
    assert _image(sdata).shape == shape
    assert len(sdata["synthetic_spots"]) == n_spots


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_spots": 0}, ValueError, "`n_spots` must be at least 1"),
        ({"n_genes": -3}, ValueError, "`n_genes` must be at least 1"),
        ({"n_spots": 2.5}, TypeError, "`n_spots` must be an integer"),
        ({"n_genes": True}, TypeError, "`n_genes` must be an integer"),
        ({"mpp": 0}, ValueError, "`mpp` must be a positive"),
        ({"mpp": -1.0}, ValueError, "`mpp` must be a positive"),
        ({"mpp": float("nan")}, ValueError, "`mpp` must be a positive"),
        ({"mpp": "fine"}, TypeError, "`mpp` must be a positive"),
        ({"mpp": 20}, ValueError, "too coarse"),
        ({"n_spots": 10_000, "mpp": 0.1}, ValueError, "Use fewer spots or a larger `mpp`"),
    ],
)
def test_bad_input_raises(kwargs, error, match):
    with pytest.raises(error, match=match):
        synthetic(**kwargs)


def test_survives_write_and_read(tmp_path):
    from spatialdata import read_zarr

    sdata = synthetic(16, 5, mpp=2.0)
    sdata.write(tmp_path / "synthetic.zarr")
    back = read_zarr(tmp_path / "synthetic.zarr")
    assert get_mpp(back) == (2.0, "user")
    pd.testing.assert_frame_equal(back["table"].obs, sdata["table"].obs)
    pd.testing.assert_frame_equal(back["table"].var, sdata["table"].var)
    np.testing.assert_array_equal(_image(back), _image(sdata))
