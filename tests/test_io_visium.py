"""``ht.io.read_visium`` on the real Visium samples, and on tiny synthetic Space Ranger folders.

Real: Space Ranger 1 layout with an .h5 (human heart subset), Space Ranger 3 with Matrix Market (mouse
embryo); those tests are marked ``real_data``. Synthetic: damaged files, written by :func:`write_visium`.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import hist2st_tk as ht

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


@pytest.mark.real_data
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


@pytest.mark.real_data
def test_kept_image_is_the_highest_resolution_that_is_not_blank(heart, embryo):
    # heart: its hires image is an all-black 2000 x 2000 placeholder, so the lowres one is kept;
    # embryo: only a lowres image
    assert _scale0(heart.images[f"{HEART}_he"]).shape == (3, 600, 600)
    assert _scale0(embryo.images[f"{EMBRYO}_he"]).shape == (3, 600, 600)


@pytest.mark.real_data
def test_blank_hires_placeholder_of_the_heart_sample_is_skipped(data_root, caplog):
    with caplog.at_level(logging.WARNING, logger="hist2st_tk"):
        sdata = ht.io.read_visium(data_root / HEART)
    assert re.search(
        r"The hires image '.*tissue_hires_image\.png' is blank .* using the lowres image", caplog.text
    )
    pixels = _scale0(sdata.images[f"{HEART}_he"]).values
    assert pixels.shape == (3, 600, 600) and pixels.std() > 10  # the real H&E, not a constant


@pytest.mark.real_data
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


@pytest.mark.real_data
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


@pytest.mark.real_data
def test_sample_and_patient(heart, embryo):
    assert set(heart["table"].obs["sample"]) == {HEART}
    assert set(heart["table"].obs["patient"]) == {"P1"}
    assert set(embryo["table"].obs["patient"]) == {EMBRYO}  # defaults to the sample


@pytest.mark.real_data
def test_mpp_from_the_visium_spot(section, data_root):
    sample, sdata = section
    mpp, source = ht.io.get_mpp(sdata)
    assert source == "visium_spot"
    radius = sdata.shapes[f"{sample}_spots"]["radius"].to_numpy()
    np.testing.assert_allclose(mpp * 2 * radius, 55.0)  # a Visium spot is 55 um across
    factors = _scalefactors(data_root, sample)
    # both keep their lowres image (the heart's hires image is a blank placeholder)
    np.testing.assert_allclose(
        mpp, 55.0 / (factors["spot_diameter_fullres"] * factors["tissue_lowres_scalef"])
    )


@pytest.mark.real_data
def test_spots_inside_the_image(section):
    sample, sdata = section
    _, height, width = _scale0(sdata.images[f"{sample}_he"]).shape
    spots = sdata.shapes[f"{sample}_spots"]
    x, y = spots.geometry.x.to_numpy(), spots.geometry.y.to_numpy()
    assert (x >= 0).all() and (x < width).all() and (y >= 0).all() and (y < height).all()


@pytest.mark.real_data
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


@pytest.mark.real_data
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


@pytest.mark.real_data
def test_missing_counts_file(data_root, tmp_path):
    folder = _link_folder(data_root / HEART, tmp_path / "s", skip=("filtered_feature_bc_matrix.h5",))
    before = sorted(p.as_posix() for p in tmp_path.rglob("*"))
    looked_for = r"looked for .*filtered_feature_bc_matrix\.h5.*matrix\.mtx\.gz"
    with pytest.raises(FileNotFoundError, match=looked_for):
        ht.io.read_visium(folder)
    with pytest.raises(FileNotFoundError, match="counts file does not exist"):
        ht.io.read_visium(data_root / HEART, counts_file="raw_feature_bc_matrix.h5")
    assert sorted(p.as_posix() for p in tmp_path.rglob("*")) == before  # a failed read writes nothing


@pytest.mark.real_data
def test_missing_scalefactors(data_root, tmp_path):
    folder = _link_folder(data_root / HEART, tmp_path / "s", skip=("spatial/scalefactors_json.json",))
    with pytest.raises(FileNotFoundError, match="scalefactors_json.json"):
        ht.io.read_visium(folder)


@pytest.mark.real_data
def test_missing_fullres_image(data_root):
    with pytest.raises(FileNotFoundError, match="full-resolution image does not exist"):
        ht.io.read_visium(data_root / HEART, fullres_image="spatial/nope.tif")


@pytest.mark.real_data
@pytest.mark.parametrize("mpp", [0, -1.0, float("nan")])
def test_bad_mpp(data_root, mpp):
    with pytest.raises(ValueError, match="positive"):
        ht.io.read_visium(data_root / HEART, mpp=mpp)


@pytest.mark.real_data
def test_grayscale_image(data_root, tmp_path):
    from PIL import Image

    folder = _link_folder(data_root / HEART, tmp_path / "s", skip=IMAGES)
    Image.new("L", (600, 600), color=128).save(folder / "spatial" / "tissue_lowres_image.png")
    with pytest.raises(ValueError, match="not RGB"):
        ht.io.read_visium(folder)


@pytest.mark.real_data
def test_no_image(data_root, tmp_path):
    folder = _link_folder(data_root / HEART, tmp_path / "s", skip=IMAGES)
    with pytest.raises(FileNotFoundError, match="No image"):
        ht.io.read_visium(folder)


@pytest.mark.real_data
def test_fullres_image_that_does_not_fit_the_spots(data_root):
    with pytest.raises(ValueError, match="outside the 600 x 600 px fullres image"):
        ht.io.read_visium(data_root / EMBRYO, fullres_image="spatial/tissue_lowres_image.png")


@pytest.mark.real_data
def test_bad_sample_name(data_root):
    with pytest.raises(ValueError, match="cannot name SpatialData elements"):
        ht.io.read_visium(data_root / HEART, sample="my sample")


# --- synthetic Space Ranger folders: damaged files, each error naming the file ---------------------

SPOT_DIAMETER_FULLRES = 100.0
HIRES_SCALEF, LOWRES_SCALEF = 0.25, 0.1


def write_visium(
    folder: Path,
    *,
    n: int = 4,
    counts: np.ndarray | None = None,
    hires: str | None = "tissue",
    lowres: str | None = "tissue",
    fullres: bool = False,
    seed: int = 0,
) -> Path:
    """A tiny Space Ranger 1 folder: ``n`` x ``n`` spots 200 px apart in full resolution, their counts
    (``.h5``), a positions file that also lists two off-tissue spots without counts, and the images.

    ``hires``, ``lowres``: ``"tissue"`` (random RGB), ``"blank"`` (all-black RGBA, like the heart
    sample's placeholder) or ``None`` (no file). ``fullres`` also writes ``fullres.png``.
    """
    import h5py
    from PIL import Image

    rng = np.random.default_rng(seed)
    barcodes = [f"SPOT{i:04d}-1" for i in range(n * n)]
    genes = ["G1", "G2", "G3"]
    counts = rng.poisson(5, size=(n * n, len(genes))).astype(np.float64) if counts is None else counts
    matrix = sparse.csr_matrix(counts)  # 10x stores genes x barcodes in CSC, i.e. barcodes x genes in CSR
    (folder / "spatial").mkdir(parents=True)
    with h5py.File(folder / "filtered_feature_bc_matrix.h5", "w") as f:
        group = f.create_group("matrix")
        group["barcodes"] = np.array(barcodes, dtype="S")
        group["data"] = matrix.data
        group["indices"] = matrix.indices.astype(np.int32)
        group["indptr"] = matrix.indptr.astype(np.int32)
        group["shape"] = np.array([len(genes), len(barcodes)], dtype=np.int32)
        features = group.create_group("features")
        features["id"] = np.array([f"ENSG{i:05d}" for i in range(len(genes))], dtype="S")
        features["name"] = np.array(genes, dtype="S")
        features["feature_type"] = np.array(["Gene Expression"] * len(genes), dtype="S")
        features["genome"] = np.array(["GRCh38"] * len(genes), dtype="S")
        features["_all_tag_keys"] = np.array(["genome"], dtype="S")
    rows = [
        (barcode, 1, i // n, i % n, 400 + 200 * (i // n), 400 + 200 * (i % n))
        for i, barcode in enumerate(barcodes)
    ]
    rows += [(f"OFF{i:04d}-1", 0, n, i, 400 + 200 * n, 400 + 200 * i) for i in range(2)]
    pd.DataFrame(rows).to_csv(folder / "spatial" / "tissue_positions_list.csv", header=False, index=False)
    (folder / "spatial" / "scalefactors_json.json").write_text(
        json.dumps(
            {
                "spot_diameter_fullres": SPOT_DIAMETER_FULLRES,
                "tissue_hires_scalef": HIRES_SCALEF,
                "tissue_lowres_scalef": LOWRES_SCALEF,
            }
        )
    )
    fullres_px = 400 + 200 * (n + 1)
    images = {
        "tissue_hires_image.png": (hires, HIRES_SCALEF),
        "tissue_lowres_image.png": (lowres, LOWRES_SCALEF),
    }
    if fullres:
        images["fullres.png"] = ("tissue", 1.0)
    for name, (kind, scale) in images.items():
        size = int(fullres_px * scale)
        if kind == "tissue":
            Image.fromarray(rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)).save(
                folder / "spatial" / name
            )
        elif kind == "blank":
            Image.new("RGBA", (size, size), (0, 0, 0, 255)).save(folder / "spatial" / name)
    return folder


def _files(folder: Path) -> list[str]:
    return sorted(p.as_posix() for p in folder.rglob("*"))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_synthetic_folder_keeps_the_hires_image(tmp_path):
    sdata = ht.io.read_visium(write_visium(tmp_path / "s"))
    assert _scale0(sdata.images["s_he"]).shape == (3, 350, 350)
    assert sdata["table"].shape == (16, 3)
    assert ht.io.get_mpp(sdata) == (
        pytest.approx(55.0 / (SPOT_DIAMETER_FULLRES * HIRES_SCALEF)),
        "visium_spot",
    )


def test_blank_hires_image_falls_back_to_lowres(tmp_path, caplog):
    folder = write_visium(tmp_path / "s", hires="blank")
    with caplog.at_level(logging.WARNING, logger="hist2st_tk"):
        sdata = ht.io.read_visium(folder)
    assert re.search(
        r"The hires image '.*tissue_hires_image\.png' is blank .* using the lowres image", caplog.text
    )
    assert _scale0(sdata.images["s_he"]).shape == (3, 140, 140)
    assert ht.io.get_mpp(sdata)[0] == pytest.approx(55.0 / (SPOT_DIAMETER_FULLRES * LOWRES_SCALEF))
    np.testing.assert_allclose(sdata["table"].obsm["spatial"][0], [40.0, 40.0])  # lowres pixels


def test_every_image_blank_is_refused(tmp_path):
    folder = write_visium(tmp_path / "s", hires="blank", lowres="blank", fullres=True)
    with pytest.raises(
        ValueError, match=r"Every image of the Visium folder '.*s' is blank.*Pass .*`fullres_image=`"
    ):
        ht.io.read_visium(folder)
    # the real image, when given, is used whatever the placeholders look like
    assert list(ht.io.read_visium(folder, fullres_image="spatial/fullres.png").images) == ["s_he"]


def test_truncated_counts_h5_is_named(tmp_path):
    folder = write_visium(tmp_path / "s")
    _truncate(folder / "filtered_feature_bc_matrix.h5")
    before = _files(tmp_path)
    with pytest.raises(
        ValueError, match=r"The counts file '.*filtered_feature_bc_matrix\.h5' is truncated or corrupted"
    ):
        ht.io.read_visium(folder)
    assert _files(tmp_path) == before  # a failed read writes nothing


@pytest.mark.parametrize("image", ["tissue_hires_image.png", "tissue_lowres_image.png"])
@pytest.mark.parametrize("fullres", [False, True])
def test_truncated_image_is_named(tmp_path, image, fullres):
    folder = write_visium(tmp_path / "s", fullres=fullres)
    _truncate(folder / "spatial" / image)
    with pytest.raises(ValueError, match=rf"The image file '.*{image}' is truncated or corrupted"):
        ht.io.read_visium(folder, fullres_image="spatial/fullres.png" if fullres else None)


def test_negative_counts_are_refused(tmp_path):
    counts = np.full((16, 3), 2.0)
    counts[5] = -5.0
    folder = write_visium(tmp_path / "s", counts=counts)
    before = _files(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"The counts file '.*filtered_feature_bc_matrix\.h5' has negative counts for 1 spot\(s\): 'SPOT0005-1'",
    ):
        ht.io.read_visium(folder)
    assert _files(tmp_path) == before


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_infinite_counts_are_refused(tmp_path, value):
    counts = np.full((16, 3), 2.0)
    counts[[3, 7], 1] = value
    folder = write_visium(tmp_path / "s", counts=counts)
    with pytest.raises(
        ValueError,
        match=r"The counts file '.*\.h5' has NaN or infinite counts for 2 spot\(s\): 'SPOT0003-1', 'SPOT0007-1'",
    ):
        ht.io.read_visium(folder)


def _blank_position(folder: Path, barcode: str, columns: tuple[int, ...]) -> None:
    path = folder / "spatial" / "tissue_positions_list.csv"
    positions = pd.read_csv(path, header=None, index_col=0).astype(float)
    positions.loc[barcode, list(columns)] = np.nan
    positions.to_csv(path, header=False)


@pytest.mark.parametrize("columns", [(4,), (5,), (4, 5)])
def test_missing_pixel_position_is_refused(tmp_path, columns):
    folder = write_visium(tmp_path / "s")
    _blank_position(folder, "SPOT0002-1", columns)
    with pytest.raises(
        ValueError,
        match=r"The tissue positions file '.*tissue_positions_list\.csv' has no finite pixel position for "
        r"1 barcode\(s\) of the counts file: 'SPOT0002-1'",
    ):
        ht.io.read_visium(folder)


def test_missing_position_of_a_spot_without_counts_is_ignored(tmp_path):
    folder = write_visium(tmp_path / "s")
    _blank_position(folder, "OFF0001-1", (4, 5))  # off the tissue: not in the filtered counts
    assert ht.io.read_visium(folder)["table"].n_obs == 16


@pytest.mark.real_data
def test_truncated_matrix_market_counts_are_named(data_root, tmp_path):
    matrix = "filtered_feature_bc_matrix/matrix.mtx.gz"
    folder = _link_folder(data_root / EMBRYO, tmp_path / "s", skip=(matrix,))
    data = (data_root / EMBRYO / matrix).read_bytes()
    (folder / matrix).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"is the counts file '.*matrix\.mtx\.gz' truncated or corrupted\?"):
        ht.io.read_visium(folder)
