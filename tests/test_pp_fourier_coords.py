"""ht.pp.fourier_coords: random Fourier features of the spot positions, in microns."""

from __future__ import annotations

import numpy as np
import pytest

import hist2st_tk as ht
from hist2st_tk.pp._fourier import fourier_coords, random_fourier_features

KEY = "X_fourier_coords"


def _section(seed: int = 0, mpp: float = 5.0, sample: str = "s"):
    return ht.datasets.synthetic(n_spots=16, n_genes=3, seed=seed, sample=sample, mpp=mpp)


@pytest.fixture(scope="module")
def base():
    return _section()


@pytest.fixture
def sdata(base):
    """A fresh SpatialData sharing the image, with its own table and attrs."""
    import copy

    from spatialdata import SpatialData

    return SpatialData(
        images=dict(base.images),
        shapes=dict(base.shapes),
        tables={"table": base["table"].copy()},
        attrs=copy.deepcopy(dict(base.attrs)),
    )


def test_shape_dtype_and_params(sdata):
    assert fourier_coords(sdata, n_features=8, scale_um=300.0, seed=3) is None
    table = sdata["table"]
    features = table.obsm[KEY]
    assert features.shape == (16, 16) and features.dtype == np.float32
    # Columns are cosines then sines of the same phases.
    np.testing.assert_allclose(features[:, :8] ** 2 + features[:, 8:] ** 2, 1.0, atol=1e-5)
    assert table.uns[KEY]["params"] == {
        "n_features": 8,
        "scale_um": 300.0,
        "seed": 3,
        "mpp": 5.0,
        "image_key": "s_he",
    }


def test_same_seed_gives_the_same_frequencies_in_every_section():
    first, second = _section(seed=1, sample="a"), _section(seed=2, sample="b")
    np.testing.assert_array_equal(first["table"].obsm["spatial"], second["table"].obsm["spatial"])
    for sdata in (first, second):
        fourier_coords(sdata, n_features=6, key_added="X_pos")
    np.testing.assert_array_equal(first["table"].obsm["X_pos"], second["table"].obsm["X_pos"])
    assert first["table"].uns["X_pos"]["params"]["image_key"] == "a_he"
    fourier_coords(second, n_features=6, seed=1, key_added="X_pos")
    assert not np.allclose(first["table"].obsm["X_pos"], second["table"].obsm["X_pos"])


def test_features_are_in_microns():
    fine, coarse = _section(mpp=2.0), _section(mpp=4.0)
    np.testing.assert_allclose(coarse["table"].obsm["spatial"] * 2, fine["table"].obsm["spatial"])
    for sdata in (fine, coarse):
        fourier_coords(sdata, n_features=16, scale_um=50.0)
    np.testing.assert_allclose(fine["table"].obsm[KEY], coarse["table"].obsm[KEY], atol=1e-5)


def test_doubling_mpp_and_halving_pixels_changes_nothing(sdata):
    fourier_coords(sdata, n_features=16, scale_um=80.0)
    before = sdata["table"].obsm[KEY].copy()
    sdata["table"].obsm["spatial"] = sdata["table"].obsm["spatial"] / 2
    ht.io.set_mpp(sdata, "s_he", 10.0)
    fourier_coords(sdata, n_features=16, scale_um=80.0)
    np.testing.assert_allclose(sdata["table"].obsm[KEY], before, atol=1e-5)
    assert sdata["table"].uns[KEY]["params"]["mpp"] == 10.0


def test_frequencies_have_the_scale_asked_for():
    """Random Fourier features approximate a Gaussian kernel of width ``scale_um / (2 pi)``."""
    points = np.array([[0.0, 0.0], [60.0, 80.0]])  # 100 um apart
    features = random_fourier_features(points, n_features=4000, scale_um=500.0, seed=0).astype(np.float64)
    kernel = features[0] @ features[1] / 4000
    expected = np.exp(-2 * np.pi**2 * (100 / 500) ** 2)
    assert abs(kernel - expected) < 0.05


def test_copy_leaves_the_input_unchanged(sdata):
    out = fourier_coords(sdata, n_features=4, copy=True)
    assert KEY not in sdata["table"].obsm
    assert out["table"].obsm[KEY].shape == (16, 8)
    assert out.images["s_he"] is sdata.images["s_he"]


def test_needs_spot_coordinates(sdata):
    del sdata["table"].obsm["spatial"]
    with pytest.raises(KeyError, match=r"has no obsm\['spatial'\]: the readers"):
        fourier_coords(sdata)
    assert KEY not in sdata["table"].obsm


def test_needs_the_microns_per_pixel(sdata):
    sdata.attrs["hist2st_tk"]["mpp"].clear()
    with pytest.raises(KeyError, match=r"microns per pixel of image 's_he' is unknown.*set_mpp"):
        fourier_coords(sdata)
    assert KEY not in sdata["table"].obsm and KEY not in sdata["table"].uns


def test_unknown_image_key(sdata):
    with pytest.raises(KeyError, match=r"No image 'nope'.*\['s_he'\]"):
        fourier_coords(sdata, image_key="nope")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_features": 0}, ValueError, "`n_features` must be at least 1"),
        ({"n_features": 2.5}, TypeError, "`n_features` must be an integer"),
        ({"scale_um": 0}, ValueError, "`scale_um` must be a positive"),
        ({"scale_um": -10.0}, ValueError, "`scale_um` must be a positive"),
        ({"scale_um": float("inf")}, ValueError, "`scale_um` must be a positive"),
        ({"scale_um": "500"}, TypeError, "`scale_um` must be a positive"),
        ({"seed": -1}, ValueError, "`seed` must be an integer >= 0"),
    ],
)
def test_bad_arguments(sdata, kwargs, error, match):
    with pytest.raises(error, match=match):
        fourier_coords(sdata, **kwargs)
    assert KEY not in sdata["table"].obsm
