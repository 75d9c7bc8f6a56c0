"""Estimation of a section's stain: its white balance and its Macenko or Reinhard parameters, fitted once
over all its tissue at low resolution.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ._stain_colour import (
    F_TO_LAB,
    LAB_OFFSET,
    MACENKO_ALPHA,
    MACENKO_BETA,
    MACENKO_IO,
    check_params,
    linear_table,
    linear_to_f,
    lookup,
    od_table,
    stained,
)
from ._tissue import BLACK_MAX, low_res_with_mask

if TYPE_CHECKING:
    from spatialdata import SpatialData

#: Microns per pixel at which stain parameters are estimated over the tissue (about; see ``read_low_res``).
FIT_MPP = 2.0
#: At most this many tissue pixels (a fixed random subset) enter a fit.
MAX_FIT_PIXELS = 1_000_000
#: Fewer stained pixels than this cannot give stain parameters.
MIN_FIT_PIXELS = 100
#: Macenko's ``io`` on a white-balanced image, whose glass (255) then has zero optical density.
BALANCED_IO = 256.0


def fit_section(sdata: SpatialData, image_key: str, *, method: str | None, white_balance: bool) -> dict:
    """Source parameters of a section over its tissue, and its white balance."""
    low, mask = low_res_with_mask(sdata, image_key, target_mpp=FIT_MPP)
    balance = _estimate_white_balance(low.rgb, mask, image_key) if white_balance else None
    gains = np.ones(3) if balance is None else np.asarray(balance["gains"])
    tissue = _subsample(stained(low.rgb[mask], gains))
    if method == "macenko":
        # After white balance the glass is 255; with io = 256 it has zero optical density.
        io = BALANCED_IO if balance is not None else MACENKO_IO
        params = _fit_macenko(lookup(od_table(gains, io), tissue), image_key, io=io)
    elif method == "reinhard":
        params = _fit_reinhard(lookup(linear_table(gains), tissue), image_key)
    else:
        params = None
    return {
        "params": params,
        "white_balance": balance,
        "fit_mpp": low.pixel_mpp,
        "mpp": low.mpp,
        "n_pixels": len(tissue),
    }


def _fit_macenko(od: np.ndarray, image_key: str, *, io: float) -> dict:
    """Stain matrix (haematoxylin first) and 99th percentile concentrations of ``(n, 3)`` OD values."""
    od = od.astype(np.float64)
    stained = od[(od >= MACENKO_BETA).all(axis=1)]
    _check_enough(len(stained), image_key, f"optical density of at least {MACENKO_BETA} in every channel")
    _, vectors = np.linalg.eigh(np.cov(stained, rowvar=False))
    plane = vectors[:, [2, 1]]
    # The main direction points into positive OD, so data angles stay within (-pi/2, pi/2), no wrap-around.
    plane[:, 0] *= 1.0 if plane[:, 0].sum() >= 0 else -1.0
    projected = stained @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [MACENKO_ALPHA, 100 - MACENKO_ALPHA])
    first = plane @ np.array([math.cos(low), math.sin(low)])
    second = plane @ np.array([math.cos(high), math.sin(high)])
    haematoxylin, eosin = (first, second) if first[0] > second[0] else (second, first)
    matrix = np.column_stack([haematoxylin, eosin])
    concentrations = od @ np.linalg.pinv(matrix).T
    max_concentrations = np.percentile(concentrations, 99, axis=0)
    params = {
        "stain_matrix": matrix.tolist(),
        "max_concentrations": max_concentrations.tolist(),
        "io": io,
        "beta": MACENKO_BETA,
        "alpha": MACENKO_ALPHA,
    }
    check_params(params, "macenko", f"the Macenko fit of image {image_key!r}")
    return params


def _fit_reinhard(linear: np.ndarray, image_key: str) -> dict:
    """CIELAB mean and standard deviation of ``(n, 3)`` linear RGB values."""
    _check_enough(len(linear), image_key, "tissue")
    lab = linear_to_f(linear.astype(np.float64)) @ F_TO_LAB.T + LAB_OFFSET
    params = {"lab_mean": lab.mean(axis=0).tolist(), "lab_std": lab.std(axis=0).tolist()}
    check_params(params, "reinhard", f"the Reinhard fit of image {image_key!r}")
    return params


def _estimate_white_balance(rgb: np.ndarray, mask: np.ndarray, image_key: str) -> dict:
    """Per-channel gains that make the glass white: from the background, else the brightest tissue."""
    background = rgb[~mask & (rgb.max(axis=-1) >= BLACK_MAX)]
    if len(background) >= max(MIN_FIT_PIXELS, 0.01 * mask.size):
        white, estimated_on = np.median(background, axis=0), "background"
    else:  # background masked black or cropped away: unstained tissue (fat, lumina) is the best white
        white, estimated_on = np.percentile(rgb[mask], 99, axis=0), "tissue"
    if white.min() < 128:
        msg = (
            f"Cannot white-balance image {image_key!r}: its glass colour {white.round().tolist()} is too "
            "dark to be white. Pass `white_balance=False`."
        )
        raise ValueError(msg)
    return {"white": white.tolist(), "gains": (255.0 / white).tolist(), "estimated_on": estimated_on}


def _subsample(pixels: np.ndarray) -> np.ndarray:
    if len(pixels) <= MAX_FIT_PIXELS:
        return pixels
    chosen = np.random.default_rng(0).choice(len(pixels), MAX_FIT_PIXELS, replace=False)
    return pixels[np.sort(chosen)]


def _check_enough(n: int, image_key: str, what: str) -> None:
    if n < MIN_FIT_PIXELS:
        msg = (
            f"Cannot fit stain parameters on image {image_key!r}: only {n} pixels of {what} "
            f"({MIN_FIT_PIXELS} needed). Is the image H&E, and is its tissue mask right?"
        )
        raise ValueError(msg)
