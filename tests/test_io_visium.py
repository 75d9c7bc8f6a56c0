"""``ht.io.read_visium`` on the real Visium samples.

Space Ranger 1 layout with an .h5 (human heart subset), Space Ranger 3 with Matrix Market (mouse embryo).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

import hist2st_tk as ht

pytestmark = pytest.mark.real_data

HEART = "visium_human_heart_subset"
EMBRYO = "visium_mouse_embryo"
IMAGES = ("spatial/tissue_hires_image.png", "spatial/tissue_lowres_image.png")


@pytest.fixture(scope="module")
def heart(data_root: Path):
    return ht.io.read_visium(data_root / HEART, patient="P1")


@pytest.fixture(scope="module")
def embryo(data_root: Path):
    return ht.io.read_visium(data_root / EMBRYO)


@pytest.fixture(params=[HEART, EMBRYO])
def section(request):
    """``(sample, sdata)`` of each real sample, read once per module."""
    return request.param, request.getfixturevalue("heart" if request.param == HEART else "embryo")


def _scalefactors(data_root: Path, sample: str) -> dict:
    return json.loads((data_root / sample / "spatial" / "scalefactors_json.json").read_text())


def _scale0(image):
    """The full-resolution level of a (possibly multiscale) image element."""
    return image["scale0"].image if hasattr(image, "children") and "scale0" in image.children else image


def _link_folder(source: Path, target: Path, *, skip: tuple[str, ...] = ()) -> Path:
    """A copy of a Visium folder made of symbolic links, without the files in ``skip``."""
    for file in source.rglob("*"):
        relative = file.relative_to(source).as_posix()
        if file.is_file() and relative not in skip:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            (target / relative).symlink_to(file)
    return target


def test_elements(section):
    sample, sdata = section
    from spatialdata.transformations import Identity, get_transformation

    assert list(sdata.images) == [f"{sample}_he"]
    assert list(sdata.shapes) == [f"{sample}_spots"]
    assert list(sdata.tables) == ["table"]
    image = _scale0(sdata.images[f"{sample}_he"])
    assert image.dims == ("c", "y", "x")
    assert list(image.coords["c"].values) == ["r", "g", "b"]
    assert image.dtype == np.uint8
    for element in (sdata.images[f"{sample}_he"], sdata.shapes[f"{sample}_spots"]):
        assert isinstance(get_transformation(element, to_coordinate_system="global"), Identity)


def test_kept_image_is_the_highest_resolution(heart, embryo):
    # heart: hires (a 2000 x 2000 RGBA placeholder, alpha dropped); embryo: only a lowres image
    assert _scale0(heart.images[f"{HEART}_he"]).shape == (3, 2000, 2000)
    assert _scale0(embryo.images[f"{EMBRYO}_he"]).shape == (3, 600, 600)


def test_table_annotates_spots(section):
    sample, sdata = section
    from spatialdata import match_table_to_element
    from spatialdata.models import get_table_keys

    table = sdata["table"]
    regions, region_key, instance_key = get_table_keys(table)
    assert regions == f"{sample}_spots" or list(np.atleast_1d(regions)) == [f"{sample}_spots"]
    assert (region_key, instance_key) == ("region", "spot_id")
    spots = sdata.shapes[f"{sample}_spots"]
    assert spots.index.is_unique and len(spots) == table.n_obs
    matched = match_table_to_element(sdata, f"{sample}_spots")
    assert list(matched.obs["spot_id"]) == list(spots.index)
    assert table.obs_names.is_unique and all(name.endswith("-1") for name in table.obs_names)  # barcodes
    assert list(table.obs["spot_id"]) == list(table.obs_names)  # the barcode is the spot id
    assert {"in_tissue", "array_row", "array_col"} <= set(table.obs.columns)
    # obsm["spatial"] is the spot centre in the image's pixels
    centres = spots.loc[table.obs["spot_id"]]
    np.testing.assert_allclose(table.obsm["spatial"][:, 0], centres.geometry.x)
    np.testing.assert_allclose(table.obsm["spatial"][:, 1], centres.geometry.y)


def test_counts_and_log_normalised_x(section):
    _, sdata = section
    table = sdata["table"]
    counts = table.layers["counts"]
    values = counts.data if sparse.issparse(counts) else np.asarray(counts)
    assert values.min() >= 0 and np.array_equal(values, np.round(values))
    rows = np.arange(min(5, table.n_obs))
    raw = np.asarray(counts[rows].todense() if sparse.issparse(counts) else counts[rows], dtype=np.float64)
    expected = np.log1p(raw / raw.sum(axis=1, keepdims=True) * 1e4)
    x = table.X[rows]
    x = np.asarray(x.todense() if sparse.issparse(x) else x)
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)


def test_sample_and_patient(heart, embryo):
    assert set(heart["table"].obs["sample"]) == {HEART}
    assert set(heart["table"].obs["patient"]) == {"P1"}
    assert set(embryo["table"].obs["patient"]) == {EMBRYO}  # defaults to the sample


def test_mpp_from_the_visium_spot(section, data_root):
    sample, sdata = section
    mpp, source = ht.io.get_mpp(sdata)
    assert source == "visium_spot"
    radius = sdata.shapes[f"{sample}_spots"]["radius"].to_numpy()
    np.testing.assert_allclose(mpp * 2 * radius, 55.0)  # a Visium spot is 55 um across
    factors = _scalefactors(data_root, sample)
    kept = "tissue_hires_scalef" if sample == HEART else "tissue_lowres_scalef"
    np.testing.assert_allclose(mpp, 55.0 / (factors["spot_diameter_fullres"] * factors[kept]))


def test_spots_inside_the_image(section):
    sample, sdata = section
    _, height, width = _scale0(sdata.images[f"{sample}_he"]).shape
    spots = sdata.shapes[f"{sample}_spots"]
    x, y = spots.geometry.x.to_numpy(), spots.geometry.y.to_numpy()
    assert (x >= 0).all() and (x < width).all() and (y >= 0).all() and (y < height).all()


def test_fullres_image_counts_folder_and_user_mpp(data_root, embryo, caplog):
    # the CytAssist image of this sample is in full-resolution pixels (lowres scale factor 0.2, 600 px)
    with caplog.at_level(logging.INFO, logger="hist2st_tk"):
        sdata = ht.io.read_visium(
            data_root / EMBRYO,
            sample="E",
            counts_file="filtered_feature_bc_matrix",
            fullres_image="spatial/detected_tissue_image.jpg",
            mpp=3.5,
        )
    assert "read Visium section 'E'" in caplog.text
    assert list(sdata.images) == ["E_he"] and list(sdata.shapes) == ["E_spots"]
    image = sdata.images["E_he"]
    assert "scale1" in image.children  # multiscale
    assert _scale0(image).shape == (3, 3000, 3000)
    assert ht.io.get_mpp(sdata) == (3.5, "user")
    lowres = embryo.shapes[f"{EMBRYO}_spots"]
    fullres = sdata.shapes["E_spots"].loc[lowres.index]
    np.testing.assert_allclose(fullres.geometry.x, lowres.geometry.x / 0.2, rtol=1e-6)
    np.testing.assert_allclose(fullres["radius"], lowres["radius"] / 0.2, rtol=1e-6)
    spatial = embryo["table"].obsm["spatial"]
    np.testing.assert_allclose(sdata["table"].obsm["spatial"], spatial / 0.2, rtol=1e-6)


def test_zarr_round_trip(heart, tmp_path):
    from spatialdata import read_zarr
    from spatialdata.models import get_table_keys

    heart.write(tmp_path / "heart.zarr")
    back = read_zarr(tmp_path / "heart.zarr")
    assert list(back.images) == list(heart.images)
    assert list(back.shapes) == list(heart.shapes)
    assert list(back.tables) == ["table"]
    assert get_table_keys(back["table"]) == get_table_keys(heart["table"])
    assert ht.io.get_mpp(back) == ht.io.get_mpp(heart)
    assert list(back["table"].layers) == ["counts"]
    np.testing.assert_array_equal(back["table"].obs["spot_id"], heart["table"].obs["spot_id"])
    assert list(back.shapes[f"{HEART}_spots"].index) == list(heart.shapes[f"{HEART}_spots"].index)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="Visium folder does not exist"):
        ht.io.read_visium(tmp_path / "nope")


def test_missing_counts_file(data_root, tmp_path):
    folder = _link_folder(data_root / HEART, tmp_path / "s", skip=("filtered_feature_bc_matrix.h5",))
    before = sorted(p.as_posix() for p in tmp_path.rglob("*"))
    looked_for = r"looked for .*filtered_feature_bc_matrix\.h5.*matrix\.mtx\.gz"
    with pytest.raises(FileNotFoundError, match=looked_for):
        ht.io.read_visium(folder)
    with pytest.raises(FileNotFoundError, match="counts file does not exist"):
        ht.io.read_visium(data_root / HEART, counts_file="raw_feature_bc_matrix.h5")
    assert sorted(p.as_posix() for p in tmp_path.rglob("*")) == before  # a failed read writes nothing


def test_missing_scalefactors(data_root, tmp_path):
    folder = _link_folder(data_root / HEART, tmp_path / "s", skip=("spatial/scalefactors_json.json",))
    with pytest.raises(FileNotFoundError, match="scalefactors_json.json"):
        ht.io.read_visium(folder)


def test_missing_fullres_image(data_root):
    with pytest.raises(FileNotFoundError, match="full-resolution image does not exist"):
        ht.io.read_visium(data_root / HEART, fullres_image="spatial/nope.tif")


@pytest.mark.parametrize("mpp", [0, -1.0, float("nan")])
def test_bad_mpp(data_root, mpp):
    with pytest.raises(ValueError, match="positive"):
        ht.io.read_visium(data_root / HEART, mpp=mpp)


def test_grayscale_image(data_root, tmp_path):
    from PIL import Image

    folder = _link_folder(data_root / HEART, tmp_path / "s", skip=IMAGES)
    Image.new("L", (600, 600), color=128).save(folder / "spatial" / "tissue_lowres_image.png")
    with pytest.raises(ValueError, match="not RGB"):
        ht.io.read_visium(folder)


def test_no_image(data_root, tmp_path):
    folder = _link_folder(data_root / HEART, tmp_path / "s", skip=IMAGES)
    with pytest.raises(FileNotFoundError, match="No image"):
        ht.io.read_visium(folder)


def test_fullres_image_that_does_not_fit_the_spots(data_root):
    with pytest.raises(ValueError, match="outside the 600 x 600 px fullres image"):
        ht.io.read_visium(data_root / EMBRYO, fullres_image="spatial/tissue_lowres_image.png")


def test_bad_sample_name(data_root):
    with pytest.raises(ValueError, match="cannot name SpatialData elements"):
        ht.io.read_visium(data_root / HEART, sample="my sample")
