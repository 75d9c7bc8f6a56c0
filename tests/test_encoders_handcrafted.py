"""Weight-free encoders: hand-crafted colour/stain/texture features and FFT band power."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hist2st_tk.encoders._fft import POWER_EPS, FFTBandPower, band_of
from hist2st_tk.encoders._handcrafted import HandcraftedFeatures

SIZE = 64
EOSIN = (235, 165, 205)
NUCLEUS = (70, 35, 110)


def _solid(rgb, size: int = SIZE) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float32).div(255).view(3, 1, 1).expand(3, size, size).clone()


def _dots(background, centres, *, radius: int = 5, size: int = SIZE, noise: int = 8) -> torch.Tensor:
    """A patch of ``background`` colour with dark purple nuclei, plus uniform pixel noise."""
    image = np.broadcast_to(np.array(background, dtype=np.float64), (size, size, 3)).copy()
    yy, xx = np.mgrid[:size, :size]
    for cy, cx in centres:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = NUCLEUS
    image += np.random.default_rng(0).integers(-noise, noise + 1, image.shape)
    return torch.tensor(np.clip(image, 0, 255) / 255, dtype=torch.float32).permute(2, 0, 1)


def _sinusoid(frequency: float, angle: float, size: int = SIZE) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    phase = 2 * math.pi * frequency * (math.cos(angle) * xx + math.sin(angle) * yy)
    return (0.5 + 0.4 * torch.cos(phase)).float().expand(3, size, size)


def _column(module, features: torch.Tensor, name: str) -> torch.Tensor:
    return features[:, module.feature_names.index(name)]


# Hand-crafted features ---------------------------------------------------------------------------


def test_shapes_and_names():
    module = HandcraftedFeatures()
    out = module(torch.rand(5, 3, SIZE, SIZE + 8))
    assert out.shape == (5, module.out_dim) and out.dtype == torch.float32
    assert len(module.feature_names) == module.out_dim == len(set(module.feature_names))
    assert torch.isfinite(out).all()
    assert module.state_dict() == {}  # no weights to save


def test_known_colours_give_their_channel_means():
    module = HandcraftedFeatures()
    colours = [(0.2, 0.5, 0.9), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)]
    x = torch.stack([torch.tensor(c).view(3, 1, 1).expand(3, SIZE, SIZE) for c in colours])
    out = module(x)
    means = torch.stack([_column(module, out, f"rgb_mean_{c}") for c in "rgb"], dim=1)
    stds = torch.stack([_column(module, out, f"rgb_std_{c}") for c in "rgb"], dim=1)
    torch.testing.assert_close(means, torch.tensor(colours))
    torch.testing.assert_close(stds, torch.zeros(3, 3), atol=1e-5, rtol=0)
    saturation = _column(module, out, "saturation_mean")
    torch.testing.assert_close(saturation, torch.tensor([(0.9 - 0.2) / 0.9, 0.0, 0.0]))
    # White holds no stain.
    assert _column(module, out, "haematoxylin_mean")[1] == 0 and _column(module, out, "eosin_mean")[1] == 0


def test_stain_deconvolution_separates_haematoxylin_and_eosin():
    module = HandcraftedFeatures()
    out = module(torch.stack([_solid(NUCLEUS), _solid(EOSIN)]))
    haematoxylin = _column(module, out, "haematoxylin_mean")
    eosin = _column(module, out, "eosin_mean")
    assert haematoxylin[0] > 0.8 and haematoxylin[0] > 3 * eosin[0]  # purple: mostly haematoxylin
    assert eosin[1] > haematoxylin[1]  # pink: mostly eosin


def test_glcm_contrast_of_a_checkerboard_exceeds_that_of_a_flat_patch():
    module = HandcraftedFeatures()
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    checker = ((yy // 2 + xx // 2) % 2).float().expand(3, SIZE, SIZE)
    out = module(torch.stack([checker, torch.full((3, SIZE, SIZE), 0.5)]))
    for distance in (1, 2):
        contrast = _column(module, out, f"glcm_contrast_d{distance}")
        assert contrast[0] > 10 and contrast[1] == 0
    flat = out[1]
    assert _column(module, flat[None], "glcm_energy_d1") == 1
    assert _column(module, flat[None], "glcm_homogeneity_d1") == 1
    assert _column(module, flat[None], "glcm_correlation_d1") == 1


def _reference_glcm_props(quantised: np.ndarray, offset: tuple[int, int], levels: int) -> np.ndarray:
    """Contrast, homogeneity, energy, correlation of one symmetric GLCM, counted pair by pair."""
    dy, dx = offset
    height, width = quantised.shape
    counts = np.zeros((levels, levels))
    for y in range(height):
        for x in range(width):
            if 0 <= y + dy < height and 0 <= x + dx < width:
                counts[quantised[y, x], quantised[y + dy, x + dx]] += 1
    p = counts + counts.T
    p /= p.sum()
    i, j = np.indices(p.shape)
    mu = (p * i).sum()
    var = (p * (i - mu) ** 2).sum()
    return np.array(
        [
            (p * (i - j) ** 2).sum(),
            (p / (1 + (i - j) ** 2)).sum(),
            np.sqrt((p**2).sum()),
            (p * (i - mu) * (j - mu)).sum() / var,
        ]
    )


def test_glcm_matches_references():
    """Distance 1 as scikit-image; distance 2 at offsets (0, 2), (-2, 2), (-2, 0), (-2, -2).

    (scikit-image rounds the diagonal offsets at distance 2 to (1, 1), so it is the reference for
    distance 1 only.)
    """
    from skimage.feature import graycomatrix, graycoprops

    module = HandcraftedFeatures(levels=8)
    x = torch.rand(2, 3, 20, 24)
    out = module(x)
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).numpy()
    props = ("contrast", "homogeneity", "energy", "correlation")
    for i in range(2):
        quantised = np.clip((grey[i] * 8).astype(np.int64), 0, 7)
        glcm = graycomatrix(
            quantised.astype(np.uint8),
            [1],
            [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
            levels=8,
            symmetric=True,
            normed=True,
        )
        expected_d1 = [graycoprops(glcm, prop).mean() for prop in props]
        offsets = [(0, 2), (-2, 2), (-2, 0), (-2, -2)]
        expected_d2 = np.mean([_reference_glcm_props(quantised, o, 8) for o in offsets], axis=0)
        for d, expected in ((1, expected_d1), (2, expected_d2)):
            got = [out[i, module.feature_names.index(f"glcm_{prop}_d{d}")].item() for prop in props]
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_nuclei_raise_the_haematoxylin_fraction_and_blob_count():
    module = HandcraftedFeatures()
    centres = [(12 + 20 * i, 12 + 20 * j) for i in range(3) for j in range(3)]
    out = module(torch.stack([_dots(EOSIN, centres), _dots(EOSIN, [])]))
    fraction = _column(module, out, "haematoxylin_fraction")
    assert fraction[0] > 0.1 and fraction[1] == 0
    blobs = _column(module, out, "nuclei_per_10k_px") * SIZE * SIZE / 1e4
    assert blobs[0].round() == len(centres) and blobs[1] == 0


def test_a_flat_dark_patch_is_one_blob_not_one_per_pixel():
    module = HandcraftedFeatures()
    out = module(_solid(NUCLEUS)[None])
    assert _column(module, out, "haematoxylin_fraction") == 1
    assert (_column(module, out, "nuclei_per_10k_px") * SIZE * SIZE / 1e4).round() == 1


def test_memory_layout_and_batching_do_not_change_features():
    module = HandcraftedFeatures()
    x = torch.rand(4, 3, SIZE, SIZE)
    out = module(x)
    torch.testing.assert_close(module(x.contiguous(memory_format=torch.channels_last)), out)
    torch.testing.assert_close(module(x[2:3]), out[2:3])
    assert torch.equal(x, x.clone())  # input untouched
    with torch.inference_mode():
        torch.testing.assert_close(module(x), out)


# Bad input (both modules) ------------------------------------------------------------------------


@pytest.mark.parametrize("module_cls", [HandcraftedFeatures, FFTBandPower])
@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.rand(3, SIZE, SIZE), r"shape \(N, 3, H, W\), got shape \(3, 64, 64\)"),
        (torch.rand(2, 4, SIZE, SIZE), r"shape \(N, 3, H, W\), got shape \(2, 4, 64, 64\)"),
        (torch.randint(0, 255, (2, 3, SIZE, SIZE), dtype=torch.uint8), "divide uint8 images by 255"),
        (torch.rand(2, 3, SIZE, SIZE) * 255, r"values in \[0, 1\], got values in \[.*\]"),
        (torch.rand(2, 3, SIZE, SIZE) - 0.5, r"without mean/std normalisation"),
        (torch.full((1, 3, SIZE, SIZE), float("nan")), "NaN or infinite"),
    ],
)
def test_bad_input_is_refused(module_cls, x, match):
    with pytest.raises(ValueError, match=match):
        module_cls()(x)


def test_too_small_patches_are_refused():
    with pytest.raises(ValueError, match="at least 3 x 3 px"):
        HandcraftedFeatures()(torch.rand(1, 3, 2, 8))
    with pytest.raises(ValueError, match=r"no frequency in .* bands.*fewer bands"):
        FFTBandPower(n_bands=16)(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="`levels` must be between 2 and 64"):
        HandcraftedFeatures(levels=1)
    with pytest.raises(ValueError, match="`n_bands` must be an integer of at least 1"):
        FFTBandPower(n_bands=0)


def test_empty_batch():
    assert HandcraftedFeatures()(torch.rand(0, 3, SIZE, SIZE)).shape == (0, 22)
    assert FFTBandPower()(torch.rand(0, 3, SIZE, SIZE)).shape == (0, 16)


# FFT band power ----------------------------------------------------------------------------------


def test_fft_shapes_and_names():
    module = FFTBandPower(n_bands=8)
    out = module(torch.rand(3, 3, SIZE, 48))
    assert out.shape == (3, 8) and out.dtype == torch.float32
    assert module.out_dim == 8 and module.feature_names[0] == "fft_band_00" and len(module.feature_names) == 8
    assert module.band_edges[0] == 0 and module.band_edges[-1] == 1
    assert module.state_dict() == {}


@pytest.mark.parametrize(
    ("frequency", "angle"),
    [(0.02, 0.0), (0.05, 0.7), (0.1, math.pi / 2), (0.2, 0.0), (0.3, 1.0), (0.45, 1.2), (0.49, 0.0)],
)
def test_a_sinusoid_puts_its_power_in_its_band(frequency, angle):
    module = FFTBandPower(n_bands=16)
    out = module(_sinusoid(frequency, angle, size=128)[None])
    assert out.argmax().item() == band_of(frequency, 16)


def test_a_constant_patch_has_equal_low_power_in_every_band():
    out = FFTBandPower()(torch.full((2, 3, SIZE, SIZE), 0.6))
    torch.testing.assert_close(out, torch.full_like(out, math.log(POWER_EPS)), atol=0.05, rtol=0)
    noise = FFTBandPower()(torch.rand(1, 3, SIZE, SIZE))
    assert (noise > out[0] + 10).all()


def test_fft_is_computed_on_grey_and_batch_independent():
    module = FFTBandPower()
    x = torch.rand(3, 3, SIZE, SIZE)
    out = module(x)
    torch.testing.assert_close(module(x[1:2]), out[1:2])
    torch.testing.assert_close(module(x.contiguous(memory_format=torch.channels_last)), out)
    # Scaling the contrast by 2 adds log(4) to every band (power is quadratic).
    low_contrast = 0.25 + 0.5 * (x - 0.5) / 2
    torch.testing.assert_close(
        module(0.25 + 0.5 * (x - 0.5)), module(low_contrast) + math.log(4), atol=1e-3, rtol=1e-4
    )
