"""Frequency features of H&E patches: log power of the grey patch in radial frequency bands.

The frequency-based stream of the dual-modality model (EfficientNet + Fourier features + IPCA +
DeepONet): texture scale (fine chromatin, nuclei, glands, stroma fibres) shows as where the power lies.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._handcrafted import check_rgb_batch, to_grey

#: Added to the band power before the log, so that a flat patch gives the same finite value in every band.
POWER_EPS = 1e-10


class FFTBandPower(nn.Module):
    """Log power of each patch in ``n_bands`` radial frequency bands; no weights.

    Input: float ``(N, 3, H, W)`` RGB in ``[0, 1]`` (uint8 divided by 255, *not* mean/std normalised);
    any ``H, W`` large enough for every band to hold a frequency (about ``2 * n_bands`` px or more).
    Output: float32 ``(N, n_bands)``.

    Each patch is turned to grey (ITU-R BT.601 luma), multiplied by a 2-D Hann window (against the
    leakage of the patch edges) after subtracting its window-weighted mean, and Fourier transformed.
    A band's value is ``log(mean power + 1e-10)``, the mean of the power ``|F|^2 / sum(window^2)`` over
    the frequencies of the band (the log of the mean, not the mean of the log, so that a band holding one
    strong frequency among many empty ones still stands out).
    Band ``k`` holds the frequencies whose radius, as a fraction of the Nyquist frequency (0.5 cycles per
    pixel), lies in ``(k / n_bands, (k + 1) / n_bands]``: equal widths from DC (excluded) to Nyquist;
    the corners of the spectrum beyond Nyquist are left out. A flat patch gives ``log(1e-10)`` in every band.

    Parameters
    ----------
    n_bands
        Number of radial bands, ``out_dim``.

    Attributes
    ----------
    out_dim
        ``n_bands``.
    feature_names
        ``["fft_band_00", ...]``.
    band_edges
        The ``n_bands + 1`` band edges as fractions of the Nyquist frequency.
    """

    def __init__(self, n_bands: int = 16) -> None:
        super().__init__()
        if isinstance(n_bands, bool) or not isinstance(n_bands, int) or n_bands < 1:
            msg = f"`n_bands` must be an integer of at least 1, got {n_bands!r}."
            raise ValueError(msg)
        self.n_bands = n_bands
        self.out_dim = n_bands
        self.feature_names = [f"fft_band_{k:02d}" for k in range(n_bands)]
        self.band_edges = [k / n_bands for k in range(n_bands + 1)]
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_rgb_batch(x, name="FFTBandPower")
        n, _, height, width = x.shape
        window, averaging = self._plan(height, width, x.device)
        if n == 0:
            return x.new_zeros((0, self.out_dim), dtype=torch.float32)
        grey = to_grey(x.float())
        # Remove the window-weighted mean, so that the windowed patch has no DC to leak into low bands.
        grey -= (grey * window).sum(dim=(1, 2), keepdim=True) / window.sum()
        spectrum = torch.fft.rfft2(grey.mul_(window))
        power = (spectrum.real.square() + spectrum.imag.square()).div_(window.square().sum())
        return (power.reshape(n, -1) @ averaging).add_(POWER_EPS).log_().float()

    def _plan(self, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The Hann window ``(H, W)`` and the band-averaging matrix ``(H * (W // 2 + 1), n_bands)``."""
        key = (height, width, str(device))
        if key not in self._cache:
            self._cache[key] = (
                _hann_2d(height, width).to(device),
                _band_averaging(height, width, self.n_bands).to(device),
            )
        return self._cache[key]


def _hann_2d(height: int, width: int) -> torch.Tensor:
    return torch.outer(
        torch.hann_window(height, periodic=False, dtype=torch.float32),
        torch.hann_window(width, periodic=False, dtype=torch.float32),
    )


def _band_averaging(height: int, width: int, n_bands: int) -> torch.Tensor:
    """Matrix whose columns average the half spectrum of ``rfft2`` over each radial band.

    The half spectrum holds each frequency once for a mirrored pair, so interior columns weigh twice:
    band means then equal those over the full spectrum.
    """
    fy = torch.fft.fftfreq(height, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(width, dtype=torch.float64)[None, :]
    radius = torch.sqrt(fy.square() + fx.square()) / 0.5  # fraction of Nyquist
    band = torch.ceil(radius * n_bands).long() - 1  # (k / n, (k + 1) / n] -> k; DC -> -1
    inside = (band >= 0) & (band < n_bands)
    mirrored = (fx > 0) & (fx < 0.5)
    weight = torch.where(mirrored, 2.0, 1.0).expand_as(radius) * inside
    one_hot = torch.zeros(radius.numel(), n_bands, dtype=torch.float64)
    one_hot[inside.reshape(-1), band[inside]] = 1.0
    weighted = one_hot * weight.reshape(-1, 1)
    totals = weighted.sum(dim=0)
    empty = [k for k in range(n_bands) if totals[k] == 0]
    if empty:
        msg = (
            f"A {height} x {width} px patch has no frequency in {len(empty)} of the {n_bands} bands "
            f"(e.g. band {empty[0]}); use fewer bands (`n_bands`) or larger patches."
        )
        raise ValueError(msg)
    return (weighted / totals).float()


def band_of(frequency: float, n_bands: int) -> int:
    """The band holding a radial ``frequency`` in cycles per pixel (``0 < frequency <= 0.5``)."""
    return math.ceil(frequency / 0.5 * n_bands) - 1
