"""Hand-crafted patch features: colour, H&E stain density, GLCM texture and a nuclei-density proxy.

Everything is computed batched in torch, with no weights, so it runs wherever the patches are.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

#: Ruifrok & Johnston (2001) optical-density vectors of haematoxylin and eosin (RGB order).
HAEMATOXYLIN_OD = (0.65, 0.70, 0.29)
EOSIN_OD = (0.07, 0.99, 0.11)
#: ITU-R BT.601 luma weights, for the grey image.
GREY_WEIGHTS = (0.299, 0.587, 0.114)
#: GLCM offsets (dy, dx) per distance: 0, 45, 90 and 135 degrees.
_DIRECTIONS = ((0, 1), (-1, 1), (-1, 0), (-1, -1))
_GLCM_PROPS = ("contrast", "homogeneity", "energy", "correlation")
#: Values outside [0, 1] by more than this are a wrong input scaling, not rounding.
_RANGE_TOLERANCE = 1e-3


def check_rgb_batch(x: torch.Tensor, *, name: str) -> None:
    """Raise a ValueError unless ``x`` is a float ``(N, 3, H, W)`` tensor of finite values in ``[0, 1]``."""
    if not isinstance(x, torch.Tensor):
        msg = f"{name} expects a torch.Tensor of RGB patches, got {type(x).__name__}."
        raise TypeError(msg)
    if x.ndim != 4 or x.shape[1] != 3:
        msg = f"{name} expects RGB patches of shape (N, 3, H, W), got shape {tuple(x.shape)}."
        raise ValueError(msg)
    if not x.is_floating_point():
        msg = f"{name} expects float values in [0, 1], got dtype {x.dtype}; divide uint8 images by 255."
        raise ValueError(msg)
    if x.numel() == 0:
        return
    low, high = torch.aminmax(x)
    if not (torch.isfinite(low) and torch.isfinite(high)):
        msg = f"{name} got NaN or infinite pixel values."
        raise ValueError(msg)
    if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        msg = (
            f"{name} expects RGB values in [0, 1], got values in [{low.item():.3g}, {high.item():.3g}]. "
            "Pass the patch divided by 255, without mean/std normalisation."
        )
        raise ValueError(msg)


def to_grey(x: torch.Tensor) -> torch.Tensor:
    """Luma of ``(N, 3, H, W)`` RGB patches, ``(N, H, W)``."""
    red, green, blue = GREY_WEIGHTS
    return torch.mul(x[:, 0], red).add_(x[:, 1], alpha=green).add_(x[:, 2], alpha=blue)


def stain_matrix() -> torch.Tensor:
    """Rows: unit OD vectors of haematoxylin, eosin and their orthogonal residual (Ruifrok & Johnston)."""
    h = torch.tensor(HAEMATOXYLIN_OD, dtype=torch.float64)
    e = torch.tensor(EOSIN_OD, dtype=torch.float64)
    h, e = h / h.norm(), e / e.norm()
    residual = torch.linalg.cross(h, e)
    return torch.stack([h, e, residual / residual.norm()])


class HandcraftedFeatures(nn.Module):
    """Colour, stain, texture and nuclei-density features of H&E patches; no weights.

    Input: float ``(N, 3, H, W)`` RGB in ``[0, 1]`` (uint8 divided by 255, *not* mean/std
    normalised); any ``H, W >= 3``. Output: float32 ``(N, out_dim)``, columns named by ``feature_names``:

    - ``rgb_mean_{r,g,b}``, ``rgb_std_{r,g,b}``: colour statistics;
    - ``saturation_mean``, ``saturation_std``: HSV saturation ``(max - min) / max``;
    - ``haematoxylin_mean/std``, ``eosin_mean/std``: stain amounts from colour deconvolution of the
      optical density ``-log10((255 I + 1) / 256)`` with the Ruifrok-Johnston H&E vectors (third vector:
      their orthogonal complement); negative amounts are clipped to 0;
    - ``glcm_{contrast,homogeneity,energy,correlation}_d{1,2}``: grey-level co-occurrence texture of the
      grey image quantised to ``levels`` fixed levels (the same bins for every patch), symmetric and
      normalised, at distances 1 and 2 px averaged over the 0, 45, 90 and 135 degree directions.
      ``energy`` is the square root of the angular second moment; ``correlation`` is 1 for a flat patch;
    - ``haematoxylin_fraction``: fraction of pixels whose haematoxylin amount exceeds ``h_threshold``
      (nuclei are dark purple; the default 0.5 lies between nuclei, about 0.9, and a purple cytoplasm
      or stroma background, about 0.3);
    - ``nuclei_per_10k_px``: a blob count, not a connected-component count (which would need an
      unbatched labelling pass). The haematoxylin map is averaged over 2 x 2 pixel blocks and box-smoothed
      over ``blob_size`` blocks; a blob is a block that exceeds ``h_threshold`` and is the highest within
      ``blob_size // 2`` blocks. Counted per 10,000 input pixels. Touching nuclei may count as one, large
      ones as several; the count is in pixels of the input, so compare patches encoded at one resolution.

    Parameters
    ----------
    levels
        Grey levels of the GLCM (2 to 64).
    h_threshold
        Haematoxylin amount (optical density units) above which a pixel counts as nuclear.
    blob_size
        Edge, in 2 x 2 pixel blocks, of the smoothing and peak-separation windows of the nuclei count;
        a little under a nucleus diameter (a 7 um nucleus in a 112 um patch resized to 224 px spans
        14 px, 7 blocks), so that neighbouring nuclei stay apart.
    """

    def __init__(self, *, levels: int = 8, h_threshold: float = 0.5, blob_size: int = 5) -> None:
        super().__init__()
        if not 2 <= int(levels) <= 64:
            msg = f"`levels` must be between 2 and 64, got {levels!r}."
            raise ValueError(msg)
        if int(blob_size) < 1:
            msg = f"`blob_size` must be at least 1, got {blob_size!r}."
            raise ValueError(msg)
        self.levels = int(levels)
        self.h_threshold = float(h_threshold)
        self.blob_size = int(blob_size)
        # Plain floats, not buffers: the module has no state to save and works on any device.
        self._unmix = torch.linalg.inv(stain_matrix()).tolist()
        self.feature_names = _feature_names()
        self.out_dim = len(self.feature_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_rgb_batch(x, name="HandcraftedFeatures")
        if x.shape[-2] < 3 or x.shape[-1] < 3:
            msg = f"HandcraftedFeatures needs patches of at least 3 x 3 px, got {tuple(x.shape[-2:])}."
            raise ValueError(msg)
        if x.shape[0] == 0:
            return x.new_zeros((0, self.out_dim), dtype=torch.float32)
        # Plain NCHW layout makes every channel map a contiguous slice. Inputs are only read, never
        # modified: the large intermediate maps are updated in place instead (allocation dominates on CPU).
        x = x.float().contiguous()
        haematoxylin, eosin = self._stains(x)
        parts = [
            _mean_std(x),
            _mean_std(_saturation(x)[:, None]),
            _mean_std(haematoxylin[:, None]),
            _mean_std(eosin[:, None]),
            self._texture(to_grey(x)),
            self._nuclei(haematoxylin),
        ]
        return torch.cat(parts, dim=1).float()

    def _stains(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Haematoxylin and eosin amounts ``(N, H, W)`` each, clipped at 0."""
        # OD_c = (ln 256 - ln(255 I_c + 1)) / ln 10, and a stain amount is sum_c OD_c * unmix[c][stain].
        logs = x.mul(255.0).add_(1.0).log_()
        amounts = []
        for stain in range(2):  # the residual channel is not needed
            weights = [self._unmix[c][stain] / math.log(10.0) for c in range(3)]
            amount = torch.mul(logs[:, 0], -weights[0])
            amount.add_(logs[:, 1], alpha=-weights[1]).add_(logs[:, 2], alpha=-weights[2])
            amounts.append(amount.add_(math.log(256.0) * sum(weights)).clamp_min_(0.0))
        return amounts[0], amounts[1]

    def _texture(self, grey: torch.Tensor) -> torch.Tensor:
        levels = self.levels
        quantised = grey.mul_(levels).to(torch.int32).clamp_(0, levels - 1)
        counter = _PairCounter(quantised, levels)
        columns = []
        for distance in (1, 2):
            props = torch.stack(
                [_glcm_props(counter.glcm(dy * distance, dx * distance)) for dy, dx in _DIRECTIONS]
            )
            columns.append(props.mean(dim=0))  # average over directions: rotation-tolerant texture
        return torch.cat(columns, dim=1)

    def _nuclei(self, haematoxylin: torch.Tensor) -> torch.Tensor:
        fraction = (haematoxylin > self.h_threshold).flatten(1).float().mean(dim=1)
        # Blobs are found on 2 x 2 block means: a quarter of the pixels, and nuclei still span several.
        blocks = F.avg_pool2d(haematoxylin[:, None], 2)[:, 0].double()
        _, height, width = blocks.shape
        size = min(self.blob_size, height, width) | 1  # odd windows stay centred
        ones = torch.ones_like(blocks[:1])
        smooth = _window_reduce(blocks, size, torch.add) / _window_reduce(ones, size, torch.add)
        above = smooth > self.h_threshold
        # A tiny raster-order ramp breaks ties, so that a flat plateau counts as one blob, not as each pixel.
        ramp = torch.arange(height * width, dtype=smooth.dtype, device=smooth.device).reshape(height, width)
        smooth += ramp * (1e-6 / (height * width))
        peaks = (smooth == _window_reduce(smooth, size, torch.maximum)) & above
        density = peaks.flatten(1).sum(dim=1).float() * (1e4 / haematoxylin[0].numel())
        return torch.stack([fraction, density], dim=1)


def _feature_names() -> list[str]:
    names = [f"rgb_mean_{c}" for c in "rgb"] + [f"rgb_std_{c}" for c in "rgb"]
    names += ["saturation_mean", "saturation_std"]
    names += ["haematoxylin_mean", "haematoxylin_std", "eosin_mean", "eosin_std"]
    names += [f"glcm_{prop}_d{d}" for d in (1, 2) for prop in _GLCM_PROPS]
    names += ["haematoxylin_fraction", "nuclei_per_10k_px"]
    return names


def _mean_std(maps: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, 2C)``: the C means, then the C standard deviations (population)."""
    n, c = maps.shape[:2]
    flat = maps.reshape(n * c, -1)
    mean = flat.mean(dim=1)
    # Two passes over centred values: about twice as fast as var_mean, and exact for flat patches.
    std = torch.linalg.vector_norm(flat - mean[:, None], dim=1) / math.sqrt(flat.shape[1])
    return torch.cat([mean.reshape(n, c), std.reshape(n, c)], dim=1)


def _saturation(x: torch.Tensor) -> torch.Tensor:
    """HSV saturation ``(max - min) / max`` of ``(N, 3, H, W)``, 0 for black, ``(N, H, W)``."""
    high = torch.maximum(x[:, 0], x[:, 1])
    torch.maximum(high, x[:, 2], out=high)
    low = torch.minimum(x[:, 0], x[:, 1])
    torch.minimum(low, x[:, 2], out=low)
    return torch.sub(high, low, out=low).div_(high.clamp_min_(1e-6))


def _window_reduce(x: torch.Tensor, size: int, op) -> torch.Tensor:
    """``op`` (``torch.add`` or ``torch.maximum``) over a centred ``size x size`` window of ``(N, H, W)``.

    Separable, with in-place shifted slices: much faster on CPU than pooling with stride 1. Windows are
    clipped at the borders (no padding values enter).
    """
    out = x.clone()
    for dim in (-1, -2):
        source = out.clone()
        n = x.shape[dim]
        for k in range(1, size // 2 + 1):
            ahead = out.narrow(dim, 0, n - k)
            op(ahead, source.narrow(dim, k, n - k), out=ahead)
            behind = out.narrow(dim, k, n - k)
            op(behind, source.narrow(dim, 0, n - k), out=behind)
    return out


class _PairCounter:
    """Grey-level co-occurrence counts of a batch of quantised images, for any pixel offset.

    Pair ``(a, b)`` of image ``k`` goes to bin ``k L^2 + a L + b``, so one ``index_add_`` counts the
    whole batch; the index buffer is allocated once and reused for every offset.
    """

    def __init__(self, quantised: torch.Tensor, levels: int) -> None:
        n = quantised.shape[0]
        image = torch.arange(n, dtype=torch.int32, device=quantised.device)[:, None, None]
        self.quantised = quantised
        self.levels = levels
        self.first = quantised * levels + image * (levels * levels)
        self.index = torch.empty(quantised.numel(), dtype=torch.int32, device=quantised.device)
        self.ones = torch.ones(quantised.numel(), dtype=torch.float32, device=quantised.device)

    def glcm(self, dy: int, dx: int) -> torch.Tensor:
        """Symmetric, normalised co-occurrence matrices ``(N, L, L)`` of pixels offset by ``(dy, dx)``."""
        n, height, width = self.quantised.shape
        levels = self.levels
        first = self.first[:, max(0, -dy) : height - max(0, dy), max(0, -dx) : width - max(0, dx)]
        second = self.quantised[:, max(0, dy) : height + min(0, dy), max(0, dx) : width + min(0, dx)]
        index = self.index[: first.numel()].view(first.shape)
        torch.add(first, second, out=index)
        counts = torch.zeros(n * levels * levels, dtype=torch.float32, device=index.device)
        counts.index_add_(0, index.reshape(-1), self.ones[: index.numel()])
        counts = counts.reshape(n, levels, levels)
        counts = counts + counts.transpose(1, 2)
        return counts / counts.sum(dim=(1, 2), keepdim=True).clamp_min(1.0)


def _glcm_props(p: torch.Tensor) -> torch.Tensor:
    """Contrast, homogeneity, energy and correlation of ``(N, L, L)`` GLCMs, ``(N, 4)``."""
    levels = p.shape[-1]
    i = torch.arange(levels, dtype=p.dtype, device=p.device)
    diff2 = (i[:, None] - i[None, :]).square()
    contrast = (p * diff2).sum(dim=(1, 2))
    homogeneity = (p / (1.0 + diff2)).sum(dim=(1, 2))
    energy = p.square().sum(dim=(1, 2)).sqrt()
    marginal = p.sum(dim=2)  # symmetric, so row and column marginals agree
    mu = (marginal * i).sum(dim=1)
    var = (marginal * (i - mu[:, None]).square()).sum(dim=1)
    centred = i[None, :] - mu[:, None]
    covariance = (p * centred[:, :, None] * centred[:, None, :]).sum(dim=(1, 2))
    flat = var < 1e-12
    correlation = torch.where(flat, torch.ones_like(var), covariance / var.clamp_min(1e-12))
    return torch.stack([contrast, homogeneity, energy, correlation], dim=1)
