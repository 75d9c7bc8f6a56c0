"""Colour arithmetic of stain normalisation, pure numpy: per-channel lookup tables (white balance, optical
density, sRGB linearisation and encoding), CIELAB conversions, the Macenko and Reinhard transforms, and
the check of the stain parameters they take.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ._tissue import BLACK_MAX, WHITE_MIN

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Macenko: transmitted light intensity, optical density below which a pixel is not stained, and
#: the percentile of the angle distribution taken as each stain's direction.
MACENKO_IO = 240.0
MACENKO_BETA = 0.15
MACENKO_ALPHA = 1.0

#: sRGB (D65) to CIE XYZ, and the D65 white, as in scikit-image.
_RGB_TO_XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_D65 = np.array([0.95047, 1.0, 1.08883])
#: Lab (L, a, b) = F @ F_TO_LAB.T + (-16, 0, 0), with F = (f(x), f(y), f(z)).
F_TO_LAB = np.array([[0.0, 116.0, 0.0], [500.0, -500.0, 0.0], [0.0, 200.0, -200.0]])
LAB_OFFSET = np.array([-16.0, 0.0, 0.0])
#: Linear sRGB to white-normalised XYZ (rows x, y, z), and back.
_TO_XYZ = _RGB_TO_XYZ / _D65[:, None]
_FROM_XYZ = np.linalg.inv(_TO_XYZ)
#: Linear light is encoded back to sRGB through a table of this many steps (a fraction of a grey level).
ENCODE_STEPS = 16384

#: The parameters of each method and their shapes.
PARAM_SHAPES = {
    "macenko": {"stain_matrix": (3, 2), "max_concentrations": (2,)},
    "reinhard": {"lab_mean": (3,), "lab_std": (3,)},
}


def check_params(params: Mapping[str, Any] | None, method: str, what: str) -> None:
    """Raise unless ``params`` holds every parameter of ``method`` with its shape, finite."""
    if not isinstance(params, dict):
        msg = f"{what} holds no {method} parameters."
        raise ValueError(msg)
    for name, shape in PARAM_SHAPES[method].items():
        try:
            value = np.asarray(params.get(name), dtype=np.float64)
        except (TypeError, ValueError):
            value = np.array(np.nan)
        if value.shape != shape or not np.isfinite(value).all():
            msg = (
                f"{_first_upper(what)} has no valid {name!r} (a finite array of shape {shape}), got "
                f"{params.get(name)!r}. The tissue may be too small or too pale to fit."
            )
            raise ValueError(msg)
    positive = "max_concentrations" if method == "macenko" else "lab_std"
    if not (np.asarray(params[positive]) > 0).all():
        msg = f"{_first_upper(what)} has non-positive {positive!r} {params[positive]}; cannot normalise with it."
        raise ValueError(msg)


def _first_upper(text: str) -> str:
    return text[:1].upper() + text[1:]


def stained(pixels: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Tissue pixels that carry stain: neither glass-white (after white balance) nor masked black.

    The tissue mask's rim and the tissue's holes hold glass, which would bias the colour statistics.
    """
    darkest = (pixels * gains).min(axis=1)
    return pixels[(darkest <= WHITE_MIN) & (pixels.max(axis=1) >= BLACK_MAX)]


def balanced(gains: np.ndarray) -> np.ndarray:
    """``(3, 256)`` white-balanced value of each channel value, in ``[0, 255]``."""
    return np.clip(np.arange(256.0)[None, :] * gains[:, None], 0.0, 255.0)


def od_table(gains: np.ndarray, io: float) -> np.ndarray:
    """Flat ``(768,)`` optical density of each (channel, value) after white balance."""
    return (-np.log((balanced(gains) + 1.0) / io)).astype(np.float32).ravel()


def linear_table(gains: np.ndarray) -> np.ndarray:
    """Flat ``(768,)`` linear light of each (channel, value) after white balance (sRGB decoding)."""
    value = balanced(gains) / 255.0
    linear = np.where(value > 0.04045, ((value + 0.055) / 1.055) ** 2.4, value / 12.92)
    return linear.astype(np.float32).ravel()


def encode_table() -> np.ndarray:
    """uint8 sRGB value of ``ENCODE_STEPS`` evenly spaced linear light levels in ``[0, 1]``."""
    linear = np.linspace(0.0, 1.0, ENCODE_STEPS)
    value = np.where(linear > 0.0031308, 1.055 * linear ** (1 / 2.4) - 0.055, 12.92 * linear)
    return np.clip(np.rint(value * 255), 0, 255).astype(np.uint8)


def lookup(table: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    return table[pixels.reshape(-1, 3) + np.array([0, 256, 512], dtype=np.intp)]


def linear_to_f(linear: np.ndarray) -> np.ndarray:
    """CIELAB's ``f(X / Xn), f(Y / Yn), f(Z / Zn)`` of linear sRGB values."""
    xyz = linear @ _TO_XYZ.T.astype(linear.dtype)
    return np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)


def lab_to_linear(f: np.ndarray) -> np.ndarray:
    """Inverse of :func:`linear_to_f`."""
    xyz = np.where(f > 0.2068966, f * f * f, (f - 16.0 / 116.0) / 7.787)
    return xyz @ _FROM_XYZ.T.astype(f.dtype)


def macenko_transform(gains: np.ndarray, source, target) -> tuple[np.ndarray, np.ndarray, float]:
    """OD table and the 3 x 3 matrix mapping source OD to target OD (through the concentrations)."""
    check_params(source, "macenko", "The stain record's source")
    check_params(target, "macenko", "The stain record's target")
    io = float(source.get("io", MACENKO_IO))
    source_matrix = np.asarray(source["stain_matrix"], dtype=np.float64)
    scale = np.asarray(target["max_concentrations"]) / np.asarray(source["max_concentrations"])
    to_concentrations = np.linalg.pinv(source_matrix).T
    matrix = to_concentrations @ np.diag(scale) @ np.asarray(target["stain_matrix"], dtype=np.float64).T
    return od_table(gains, io), matrix.astype(np.float32), float(target.get("io", io))


def reinhard_transform(gains: np.ndarray, source, target) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear-light table and the affine map, in CIELAB's ``f`` space, of the Lab mean/std matching."""
    check_params(source, "reinhard", "The stain record's source")
    check_params(target, "reinhard", "The stain record's target")
    gain = np.asarray(target["lab_std"]) / np.asarray(source["lab_std"])
    shift = np.asarray(target["lab_mean"]) - gain * np.asarray(source["lab_mean"])
    # Lab = F @ T.T + o; Lab' = gain * Lab + shift; F' = (Lab' - o) @ inv(T).T, folded into F' = F @ M + b.
    inverse = np.linalg.inv(F_TO_LAB).T
    matrix = F_TO_LAB.T @ np.diag(gain) @ inverse
    offset = (gain * LAB_OFFSET + shift - LAB_OFFSET) @ inverse
    return linear_table(gains), matrix.astype(np.float32), offset.astype(np.float32)
