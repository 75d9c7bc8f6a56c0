from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from spatialdata import SpatialData
from spatialdata.models import Labels2DModel
from spatialdata.transformations import Scale, get_transformation

import hist2st_tk as ht
from hist2st_tk.io._elements import he_image
from hist2st_tk.pp._tissue import tissue_mask, tissue_pixels

GLASS = (243, 241, 246)
PINK, PURPLE, NUCLEUS = (235, 165, 205), (160, 100, 180), (70, 35, 110)


def blob_image(*, background: str = "white", size: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An H&E-like elliptic blob (pink to purple, with nuclei) on glass or on black; and its true mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    truth = ((yy - 0.5 * size) / (0.32 * size)) ** 2 + ((xx - 0.45 * size) / (0.38 * size)) ** 2 <= 1
    mix = (0.5 + 0.5 * np.sin(xx / 37.0) * np.cos(yy / 53.0))[..., None]
    tissue = mix * np.array(PURPLE) + (1 - mix) * np.array(PINK)
    nuclei = rng.random((size, size)) < 0.02
    tissue[nuclei] = NUCLEUS
    back = np.zeros(3) if background == "black" else np.array(GLASS)
    rgb = np.where(truth[..., None], tissue, back)
    noise = rng.integers(0, 7, rgb.shape) if background == "black" else rng.integers(-8, 9, rgb.shape)
    rgb = np.clip(rgb + np.where(truth[..., None], rng.integers(-8, 9, rgb.shape), noise), 0, 255)
    return rgb.astype(np.uint8), truth


def section(rgb: np.ndarray, *, mpp: float | None = 2.0, name: str = "blob_he") -> SpatialData:
    sdata = SpatialData(images={name: he_image(np.ascontiguousarray(rgb.transpose(2, 0, 1)))})
    if mpp is not None:
        ht.io.set_mpp(sdata, name, mpp)
    return sdata


def truth_at_mask(truth: np.ndarray, shape: tuple[int, int], downscale) -> np.ndarray:
    """The true mask sampled at the centres of the mask's pixels."""
    rows = ((np.arange(shape[0]) + 0.5) * downscale[0]).astype(int)
    cols = ((np.arange(shape[1]) + 0.5) * downscale[1]).astype(int)
    return truth[np.ix_(rows, cols)]


@pytest.mark.parametrize("background", ["white", "black"])
def test_finds_the_blob_on_white_and_on_black_background(background):
    rgb, truth = blob_image(background=background)
    sdata = section(rgb)
    tissue_mask(sdata)
    mask = np.asarray(sdata.labels["blob_tissue"].values)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    record = sdata.attrs["hist2st_tk"]["tissue"]["blob_tissue"]
    expected = truth_at_mask(truth, mask.shape, record["downscale"])
    iou = (expected & (mask == 1)).sum() / (expected | (mask == 1)).sum()
    assert iou > 0.9
    assert record["tissue_fraction"] == pytest.approx(mask.mean())


def test_mask_overlays_the_full_resolution_image():
    rgb, truth = blob_image(size=600)
    sdata = section(rgb, mpp=2.0)
    tissue_mask(sdata, target_mpp=8.0)
    labels = sdata.labels["blob_tissue"]
    assert labels.shape == (150, 150)  # 2 um/px block-averaged by 4 to 8 um/px
    transformation = get_transformation(labels, to_coordinate_system="global")
    assert isinstance(transformation, Scale)
    assert transformation.to_affine_matrix(("y", "x"), ("y", "x"))[:2, :2] == pytest.approx(
        np.diag([4.0, 4.0])
    )
    record = sdata.attrs["hist2st_tk"]["tissue"]["blob_tissue"]
    assert record["mask_mpp"] == pytest.approx(8.0) and record["mpp"] == 2.0 and record["factor"] == 4
    assert record["image_key"] == "blob_he"
    json.dumps(record)  # plain python types only
    # the blob's centre (full-resolution pixel 300, 270) is tissue, the corner is not
    mask = np.asarray(labels.values)
    assert mask[300 // 4, 270 // 4] == 1 and mask[2, 2] == 0


def test_key_added_and_image_keys_without_he_suffix():
    rgb, _ = blob_image()
    sdata = section(rgb, name="scan")
    tissue_mask(sdata, key_added="my_mask")
    tissue_mask(sdata)
    assert set(sdata.labels) == {"my_mask", "scan_tissue"}
    with pytest.raises(ValueError, match="'scan' already names one of the images"):
        tissue_mask(sdata, key_added="scan")


def test_target_mpp_picks_a_coarser_level_or_factor():
    rgb, _ = blob_image()
    sdata = section(rgb, mpp=2.0)
    tissue_mask(sdata, target_mpp=16.0)
    assert sdata.labels["blob_tissue"].shape == (75, 75)
    tissue_mask(sdata, target_mpp=1.0)  # finer than the image: the full resolution
    assert sdata.labels["blob_tissue"].shape == (600, 600)


def test_small_pieces_are_dropped():
    rgb, _ = blob_image()
    rgb[20:40, 500:520] = PURPLE  # a 40 x 40 um speck of debris
    sdata = section(rgb, mpp=2.0)
    tissue_mask(sdata, min_area_um2=20_000)
    assert np.asarray(sdata.labels["blob_tissue"].values)[30 // 4, 510 // 4] == 0
    tissue_mask(sdata, min_area_um2=0)
    assert np.asarray(sdata.labels["blob_tissue"].values)[30 // 4, 510 // 4] == 1


def test_tissue_pixels_use_the_stored_mask_and_write_nothing_without_one():
    rgb, truth = blob_image()
    sdata = section(rgb)
    before = copy.deepcopy(sdata.attrs)
    pixels = tissue_pixels(sdata, "blob_he", target_mpp=8.0)
    assert pixels.dtype == np.uint8 and pixels.shape[1] == 3
    assert len(pixels) == pytest.approx(truth.sum() / 16, rel=0.1)
    assert sdata.attrs == before and not sdata.labels
    # a stored mask (here edited to a small square) is what counts
    tissue_mask(sdata)
    square = np.zeros(sdata.labels["blob_tissue"].shape, dtype=np.uint8)
    square[70:80, 60:70] = 1
    sdata.labels["blob_tissue"] = Labels2DModel.parse(
        square, dims=("y", "x"), transformations={"global": Scale([4.0, 4.0], axes=("y", "x"))}
    )
    assert len(tissue_pixels(sdata, "blob_he", target_mpp=8.0)) == 100
    assert len(tissue_pixels(sdata, "blob_he", target_mpp=4.0)) == 400  # resampled to the finer grid


def test_no_tissue_is_an_error_and_writes_nothing():
    rng = np.random.default_rng(0)
    blank = np.clip(np.array(GLASS) + rng.integers(-8, 9, (400, 400, 3)), 0, 255).astype(np.uint8)
    sdata = section(blank)
    before = copy.deepcopy(sdata.attrs)
    with pytest.raises(ValueError, match="No tissue found in image 'blob_he'"):
        tissue_mask(sdata)
    with pytest.raises(ValueError, match="No tissue found"):
        tissue_pixels(sdata, "blob_he", target_mpp=8.0)
    assert sdata.attrs == before and not sdata.labels


def test_bad_input():
    rgb, _ = blob_image()
    sdata = section(rgb, mpp=None)
    with pytest.raises(KeyError, match="microns per pixel of image 'blob_he' is unknown.*set_mpp"):
        tissue_mask(sdata)
    ht.io.set_mpp(sdata, "blob_he", 2.0)
    with pytest.raises(KeyError, match=r"No image 'nope' in the SpatialData; images: \['blob_he'\]"):
        tissue_mask(sdata, image_key="nope")
    with pytest.raises(ValueError, match="`target_mpp` must be a positive"):
        tissue_mask(sdata, target_mpp=0)
    with pytest.raises(ValueError, match="`min_area_um2` must be a non-negative"):
        tissue_mask(sdata, min_area_um2=-1)
    assert not sdata.labels and "tissue" not in sdata.attrs["hist2st_tk"]


@pytest.mark.real_data
def test_real_section_tissue_covers_the_spots(her2st):
    loaded = her2st("B4")
    # a shallow copy: the session-cached section must not be modified
    sdata = SpatialData(images=dict(loaded.images), shapes=dict(loaded.shapes), tables=dict(loaded.tables))
    sdata.attrs.update(copy.deepcopy(dict(loaded.attrs)))
    tissue_mask(sdata)
    record = sdata.attrs["hist2st_tk"]["tissue"]["B4_tissue"]
    assert 0.15 < record["tissue_fraction"] < 0.45
    assert 4.0 < record["mask_mpp"] < 12.0
    mask = np.asarray(sdata.labels["B4_tissue"].values)
    xy = sdata.tables["table"].obsm["spatial"]
    rows = (xy[:, 1] / record["downscale"][0]).astype(int)
    cols = (xy[:, 0] / record["downscale"][1]).astype(int)
    assert mask[rows, cols].mean() > 0.95
