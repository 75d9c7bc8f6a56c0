from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
import spatialdata
from skimage.color import rgb2lab
from spatialdata import SpatialData

import hist2st_tk as ht
from hist2st_tk.io._elements import he_image
from hist2st_tk.pp._stain import normalize_stain, stain_normalizer, stain_reference
from hist2st_tk.pp._tissue import tissue_mask

#: Stain vectors (columns haematoxylin, eosin) of two differently stained versions of one tissue.
STAINS_A = np.array([[0.70, 0.25], [0.62, 0.85], [0.35, 0.46]])
STAINS_B = np.array([[0.55, 0.15], [0.75, 0.80], [0.37, 0.58]])
SIZE, CELL = 512, 8  # pixels (1 um each); concentrations are constant over CELL x CELL pixels


def unit(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=0)


def concentrations(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin and eosin concentrations ``(SIZE, SIZE, 2)`` of an elliptic tissue, and its mask.

    A third of the cells is pure haematoxylin, a third pure eosin, the rest a mix.
    """
    rng = np.random.default_rng(seed)
    n = SIZE // CELL
    kind = rng.integers(0, 3, (n, n))
    conc = np.stack([rng.uniform(0.5, 1.8, (n, n)), rng.uniform(1.0, 2.0, (n, n))], axis=-1)
    conc[kind == 0, 1] = 0.0
    conc[kind == 1, 0] = 0.0
    conc[kind == 2] *= 0.6
    conc = conc.repeat(CELL, axis=0).repeat(CELL, axis=1)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    truth = ((yy - SIZE / 2) / (0.35 * SIZE)) ** 2 + ((xx - SIZE / 2) / (0.4 * SIZE)) ** 2 <= 1
    conc[~truth] = 0.0
    return conc, truth


def render(conc: np.ndarray, stains: np.ndarray, *, glass=(239, 239, 239), seed: int = 0) -> np.ndarray:
    """Beer-Lambert rendering ``I = 240 exp(-C S^T) - 1`` on glass of colour ``glass``, with noise."""
    rng = np.random.default_rng(seed)
    rgb = 240.0 * np.exp(-(conc @ unit(stains).T)) - 1.0
    rgb *= np.asarray(glass) / 239.0
    rgb += rng.integers(-2, 3, rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def section(rgb: np.ndarray, *, mpp: float | None = 1.0, name: str = "tint_he") -> SpatialData:
    sdata = SpatialData(images={name: he_image(np.ascontiguousarray(rgb.transpose(2, 0, 1)))})
    if mpp is not None:
        ht.io.set_mpp(sdata, name, mpp)
    return sdata


def tissue_mean(rgb: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return rgb[truth].astype(float).mean(axis=0)


def test_macenko_recovers_the_stain_vectors():
    conc, _ = concentrations()
    sdata = section(render(conc, STAINS_A))
    normalize_stain(sdata, method="macenko", white_balance=False)
    record = sdata.attrs["hist2st_tk"]["stain"]["tint_he"]
    fitted = np.asarray(record["source"]["stain_matrix"])
    cosine = (fitted * unit(STAINS_A)).sum(axis=0) / np.linalg.norm(fitted, axis=0)
    assert (cosine > 0.99).all(), cosine  # haematoxylin first, eosin second
    assert record["reference"] == "default" and record["white_balance"] is None
    assert record["target"]["stain_matrix"] == [[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]]
    assert record["fit_mpp"] == pytest.approx(2.0) and record["mpp"] == 1.0
    json.dumps(record)


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_normalising_to_a_reference_of_the_same_section_is_near_identity(method):
    conc, _ = concentrations()
    rgb = render(conc, STAINS_A)
    sdata = section(rgb)
    reference = stain_reference(sdata, method=method, white_balance=False)
    assert reference["method"] == method and reference["sample"] == "tint"
    normalize_stain(sdata, method=method, reference=reference, white_balance=False)
    assert sdata.attrs["hist2st_tk"]["stain"]["tint_he"]["reference"] == "tint"
    out = stain_normalizer(sdata, "tint_he")(rgb)
    assert np.abs(out.astype(int) - rgb).mean() < 1.0


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_two_stainings_of_one_tissue_agree_after_normalisation(method):
    conc, truth = concentrations()
    first, second = render(conc, STAINS_A), render(0.8 * conc, STAINS_B, seed=1)
    before = np.abs(tissue_mean(first, truth) - tissue_mean(second, truth)).max()
    outputs = []
    for rgb in (first, second):
        sdata = section(rgb)
        normalize_stain(sdata, method=method)
        outputs.append(stain_normalizer(sdata)(rgb))
    after = np.abs(tissue_mean(outputs[0], truth) - tissue_mean(outputs[1], truth)).max()
    assert before > 15
    assert after < 0.25 * before


def test_reinhard_matches_the_target_lab_statistics_on_tissue():
    conc, truth = concentrations()
    rgb = render(conc, STAINS_A)
    sdata = section(rgb)
    target = {"method": "reinhard", "lab_mean": [55.0, 20.0, -12.0], "lab_std": [12.0, 12.0, 7.0]}
    normalize_stain(sdata, method="reinhard", reference=target, white_balance=False)
    assert sdata.attrs["hist2st_tk"]["stain"]["tint_he"]["reference"] == "user"
    lab = rgb2lab(stain_normalizer(sdata)(rgb[truth][None]))[0]
    # the fit also saw the mask's rim, a little paler than the true tissue
    assert lab.mean(axis=0) == pytest.approx(target["lab_mean"], abs=0.75)
    assert lab.std(axis=0) == pytest.approx(target["lab_std"], rel=0.06)


def test_white_balance_makes_a_tinted_glass_white():
    conc, truth = concentrations()
    tint = (224, 212, 232)
    rgb = render(conc, STAINS_A, glass=tint)
    sdata = section(rgb)
    normalize_stain(sdata, method=None, white_balance=True)
    record = sdata.attrs["hist2st_tk"]["stain"]["tint_he"]
    assert record["method"] is None and record["source"] is None and record["target"] is None
    assert record["white_balance"]["estimated_on"] == "background"
    assert record["white_balance"]["white"] == pytest.approx(tint, abs=1)
    out = stain_normalizer(sdata)(rgb)
    glass = out[~truth].astype(float)
    assert (np.median(glass, axis=0) >= 254).all() and (glass.mean(axis=0) > 250).all()
    # before a stain method, the glass takes the neutral grey of the default reference (io = 240)
    normalize_stain(sdata, method="macenko", white_balance=True)
    assert stain_normalizer(sdata).method == "macenko"
    assert np.median(stain_normalizer(sdata)(rgb)[~truth], axis=0) == pytest.approx([239, 239, 239], abs=1)


def test_white_balance_without_visible_glass_uses_the_brightest_tissue():
    conc, truth = concentrations()
    rgb = render(conc, STAINS_A)
    rgb[~truth] = 0  # background masked black
    sdata = section(rgb)
    normalize_stain(sdata, method="reinhard", white_balance=True)
    assert sdata.attrs["hist2st_tk"]["stain"]["tint_he"]["white_balance"]["estimated_on"] == "tissue"


def test_normalizer_is_picklable_and_takes_one_patch_or_a_batch():
    conc, _ = concentrations()
    rgb = render(conc, STAINS_A)
    sdata = section(rgb)
    assert stain_normalizer(sdata, "tint_he") is None  # nothing recorded yet
    normalize_stain(sdata, method="macenko")
    normalise = stain_normalizer(sdata, "tint_he")
    clone = pickle.loads(pickle.dumps(normalise))
    batch = np.stack([rgb[:224, :224], rgb[200:424, 150:374]])
    out = clone(batch)
    assert out.dtype == np.uint8 and out.shape == batch.shape
    assert np.array_equal(out[1], normalise(batch[1]))
    assert not np.array_equal(out[1], batch[1])
    with pytest.raises(TypeError, match="takes uint8 RGB patches, got dtype float64"):
        normalise(batch.astype(float))
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\) or \(N, H, W, 3\), got \(224, 224\)"):
        normalise(batch[0, ..., 0])


def test_records_survive_write_and_read_zarr(tmp_path):
    conc, _ = concentrations()
    rgb = render(conc, STAINS_A, glass=(230, 220, 235))
    sdata = section(rgb)
    tissue_mask(sdata)
    normalize_stain(sdata, method="reinhard", white_balance=True)
    ht.io.write_zarr(sdata, tmp_path / "tint.zarr")
    read = spatialdata.read_zarr(tmp_path / "tint.zarr")
    assert read.attrs["hist2st_tk"]["stain"] == sdata.attrs["hist2st_tk"]["stain"]
    assert read.attrs["hist2st_tk"]["tissue"] == sdata.attrs["hist2st_tk"]["tissue"]
    assert np.array_equal(read.labels["tint_tissue"].values, sdata.labels["tint_tissue"].values)
    patch = rgb[100:324, 100:324]
    assert np.array_equal(stain_normalizer(read, "tint_he")(patch), stain_normalizer(sdata, "tint_he")(patch))


def test_works_on_the_synthetic_section():
    sdata = ht.datasets.synthetic(n_spots=64, n_genes=6)
    for method in ("macenko", "reinhard"):
        normalize_stain(sdata, method=method)
        patch = np.asarray(sdata.images["synthetic_he"].values[:, 100:324, 100:324]).transpose(1, 2, 0)
        assert stain_normalizer(sdata)(patch).shape == (224, 224, 3)


def test_bad_input_names_the_fix_and_leaves_the_record_alone():
    conc, _ = concentrations()
    sdata = section(render(conc, STAINS_A))
    normalize_stain(sdata, method="macenko")
    before = copy.deepcopy(sdata.attrs)

    with pytest.raises(
        ValueError,
        match=r"Unknown stain normalisation method 'vahadane'; use one of \['macenko', 'reinhard', None\]",
    ):
        normalize_stain(sdata, method="vahadane")
    with pytest.raises(
        ValueError,
        match=r"Unknown stain normalisation method 'vahadane'; use one of \['macenko', 'reinhard'\]",
    ):
        stain_reference(sdata, method="vahadane")
    reinhard = stain_reference(sdata, method="reinhard")
    with pytest.raises(
        ValueError, match=r"fitted with method 'reinhard' but `method='macenko'`.*stain_reference"
    ):
        normalize_stain(sdata, method="macenko", reference=reinhard)
    broken = {**stain_reference(sdata, method="macenko"), "max_concentrations": [np.nan, 1.0]}
    with pytest.raises(ValueError, match="no valid 'max_concentrations'"):
        normalize_stain(sdata, method="macenko", reference=broken)
    with pytest.raises(TypeError, match="`reference` must be None, a SpatialData or a dict"):
        normalize_stain(sdata, method="macenko", reference="B4")
    with pytest.raises(ValueError, match="Nothing to do"):
        normalize_stain(sdata, method=None, white_balance=False)
    with pytest.raises(KeyError, match=r"No image 'nope' in the SpatialData; images: \['tint_he'\]"):
        normalize_stain(sdata, image_key="nope")
    assert sdata.attrs == before


def test_image_without_mpp_or_without_tissue_is_an_error():
    conc, _ = concentrations()
    sdata = section(render(conc, STAINS_A), mpp=None)
    with pytest.raises(KeyError, match="microns per pixel of image 'tint_he' is unknown.*set_mpp"):
        normalize_stain(sdata)
    with pytest.raises(KeyError, match="microns per pixel of image 'tint_he' is unknown"):
        stain_reference(sdata)
    blank = section(render(np.zeros_like(conc), STAINS_A))
    before = copy.deepcopy(blank.attrs)
    with pytest.raises(ValueError, match="No tissue found in image 'tint_he'"):
        normalize_stain(blank, method="reinhard")
    assert blank.attrs == before
    # a reference without tissue fails before the section is touched
    with pytest.raises(ValueError, match="No tissue found"):
        normalize_stain(section(render(conc, STAINS_A)), reference=blank)


@pytest.mark.real_data
def test_real_section_stain_normaliser(her2st):
    loaded = her2st("B4")
    sdata = SpatialData(images=dict(loaded.images), shapes=dict(loaded.shapes), tables=dict(loaded.tables))
    sdata.attrs.update(copy.deepcopy(dict(loaded.attrs)))
    normalize_stain(sdata, method="macenko", white_balance=True)
    record = sdata.attrs["hist2st_tk"]["stain"]["B4_he"]
    matrix = np.asarray(record["source"]["stain_matrix"])
    assert np.isfinite(matrix).all() and matrix[0, 0] > matrix[0, 1]  # haematoxylin absorbs more red
    assert record["white_balance"]["estimated_on"] == "background"
    assert record["n_pixels"] > 100_000
    x, y = (int(v) for v in sdata.tables["table"].obsm["spatial"][0])
    patch = np.asarray(
        sdata.images["B4_he"]["scale0"].ds["image"][:, y - 112 : y + 112, x - 112 : x + 112].values
    )
    out = stain_normalizer(sdata)(patch.transpose(1, 2, 0))
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert 0 < out.mean() < 255
