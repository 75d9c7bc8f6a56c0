"""Stain normalisation fitted once per slide over its tissue, applied to each patch as a fixed transform.

Per-patch estimation of stain vectors hurt cross-patient accuracy when it was measured (docs/protocols.md),
so the source parameters are estimated here over all the tissue of a slide, at low resolution, and
recorded in ``sdata.attrs``. :func:`stain_normalizer` rebuilds the fixed transform from that record;
the image itself is never rewritten.

Methods: Macenko et al. (2009) stain vectors in optical density space; Reinhard et al. (2001) colour
transfer (mean and standard deviation matching), here in CIELAB; and a white balance that makes the
glass white, alone or before either method.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._constants import ATTRS_KEY
from .._logging import log_added
from .._sdata import resolve_image_key
from ._tissue import BLACK_MAX, WHITE_MIN, low_res_with_mask

if TYPE_CHECKING:
    from collections.abc import Mapping

    from spatialdata import SpatialData

StainMethod = Literal["macenko", "reinhard"]
STAIN_METHODS: tuple[str, ...] = ("macenko", "reinhard")

#: Microns per pixel at which stain parameters are estimated over the tissue (about; see ``read_low_res``).
FIT_MPP = 2.0
#: At most this many tissue pixels (a fixed random subset) enter a fit.
MAX_FIT_PIXELS = 1_000_000
#: Fewer stained pixels than this cannot give stain parameters.
MIN_FIT_PIXELS = 100

#: Macenko: transmitted light intensity, optical density below which a pixel is not stained, and
#: the percentile of the angle distribution taken as each stain's direction.
MACENKO_IO = 240.0
MACENKO_BETA = 0.15
MACENKO_ALPHA = 1.0
#: Macenko's ``io`` on a white-balanced image, whose glass (255) then has zero optical density.
BALANCED_IO = 256.0
#: The widely used H&E reference: stain matrix (rows r, g, b; columns haematoxylin, eosin) and
#: 99th percentile concentrations.
DEFAULT_MACENKO = {
    "stain_matrix": [[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]],
    "max_concentrations": [1.9705, 1.0308],
}
#: Reinhard target, CIELAB (L, a, b) mean and standard deviation of tissue: the average over the six
#: public HER2ST sections (Andersson et al. 2021, B4 and C2-C6), not white balanced, at about 1.4 um/px.
DEFAULT_REINHARD = {
    "lab_mean": [57.8, 15.1, -19.7],
    "lab_std": [19.8, 5.0, 8.8],
}

#: sRGB (D65) to CIE XYZ, and the D65 white, as in scikit-image.
_RGB_TO_XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_D65 = np.array([0.95047, 1.0, 1.08883])
#: Lab (L, a, b) = F @ _F_TO_LAB.T + (-16, 0, 0), with F = (f(x), f(y), f(z)).
_F_TO_LAB = np.array([[0.0, 116.0, 0.0], [500.0, -500.0, 0.0], [0.0, 200.0, -200.0]])
_LAB_OFFSET = np.array([-16.0, 0.0, 0.0])
#: Linear sRGB to white-normalised XYZ (rows x, y, z), and back.
_TO_XYZ = _RGB_TO_XYZ / _D65[:, None]
_FROM_XYZ = np.linalg.inv(_TO_XYZ)
#: Pixels transformed at a time by a normaliser.
_CHUNK_PIXELS = 1 << 16
#: Linear light is encoded back to sRGB through a table of this many steps (a fraction of a grey level).
_ENCODE_STEPS = 16384


def stain_reference(
    sdata: SpatialData,
    *,
    method: StainMethod = "macenko",
    image_key: str | None = None,
    white_balance: bool = False,
) -> dict[str, Any]:
    """Fit the target stain parameters of a reference section, to normalise other sections to.

    The parameters are estimated over all the tissue of the section (the mask of
    :func:`tissue_mask` when stored, else one detected on the fly), read at about 2 um per pixel.

    Parameters
    ----------
    sdata
        The reference section; the image's microns per pixel must be known.
    method
        ``"macenko"`` (stain matrix and 99th percentile concentrations) or ``"reinhard"`` (CIELAB mean
        and standard deviation).
    image_key
        The H&E image; may be omitted when the SpatialData has exactly one image.
    white_balance
        White-balance the reference (see :func:`normalize_stain`) before fitting.

    Returns
    -------
    A JSON-serialisable dict: ``method``, ``sample``, ``image_key``, ``white_balance``, ``fit_mpp``,
    ``n_pixels`` and the parameters: for Macenko ``stain_matrix`` (3 x 2, rows r, g, b; columns
    haematoxylin, eosin), ``max_concentrations``, ``io``, ``beta``, ``alpha``; for Reinhard
    ``lab_mean`` and ``lab_std`` (L, a, b). Pass it as ``reference=`` to :func:`normalize_stain`.
    """
    _check_method(method, allow_none=False)
    key = resolve_image_key(sdata, image_key)
    fit = _fit_section(sdata, key, method=method, white_balance=white_balance)
    return {
        "method": method,
        "sample": _sample(key),
        "image_key": key,
        "white_balance": fit["white_balance"] is not None,
        "fit_mpp": fit["fit_mpp"],
        "n_pixels": fit["n_pixels"],
        **fit["params"],
    }


def normalize_stain(
    sdata: SpatialData,
    *,
    method: StainMethod | None = "macenko",
    reference: SpatialData | Mapping[str, Any] | None = None,
    white_balance: bool = False,
    image_key: str | None = None,
) -> None:
    """Fit this section's stain normaliser over its tissue and record it; the image is not rewritten.

    The source parameters are estimated once for the whole slide, over its tissue (the mask of
    :func:`tissue_mask` when stored, else one detected on the fly) read at about 2 um per pixel,
    never per patch; pixels that are glass-white (darkest channel above 235 after white balance) or
    masked black are left out. :func:`stain_normalizer` turns the record into a fixed transform that
    :func:`image_features` applies to every patch.

    Parameters
    ----------
    sdata
        The section; the image's microns per pixel must be known.
    method
        ``"macenko"``: optical density ``OD = -log((I + 1) / io)`` with ``io = 240`` (256 after white
        balance, so that the balanced glass has zero density); pixels with OD below 0.15 in any channel
        are dropped; the two main eigenvectors of the OD covariance span the stain plane; the 1st and
        99th percentiles of the angles in that plane give the two stain vectors, haematoxylin being the
        one with the larger red component. Each pixel's concentrations (least squares) are scaled so
        that their 99th percentiles match the target's, then rendered with the target's stain matrix
        and ``io`` (so the glass takes the reference's grey). ``"reinhard"``: the CIELAB mean and
        standard deviation of the tissue are matched to the target's, channel by channel. ``None``:
        white balance only.
    reference
        The target. ``None``: the default (Macenko: the widely used H&E reference matrix
        ``[[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]]`` and maximum concentrations
        ``[1.9705, 1.0308]``, ``io = 240``; Reinhard: ``lab_mean = [57.8, 15.1, -19.7]`` and
        ``lab_std = [19.8, 5.0, 8.8]``, the average over the tissue of the six HER2ST sections). A
        SpatialData: a reference fitted on it with :func:`stain_reference` (same ``method`` and
        ``white_balance``). A dict returned by :func:`stain_reference`. For benchmarks, fit the
        reference on a training section so that no statistic comes from a held-out one.
    white_balance
        First scale each channel so that the glass becomes white (off by default: on the six HER2ST
        sections it made the normalised tissue colours of the sections agree less, not more): by ``255 / median`` of the
        background pixels (outside the tissue, not masked black), or of the 99th percentile of the
        tissue pixels when the slide shows no background.
    image_key
        The H&E image; may be omitted when the SpatialData has exactly one image.

    Returns
    -------
    ``None``. Writes ``attrs["hist2st_tk"]["stain"][image_key]``, a dict of plain lists and floats:
    ``method``; ``white_balance`` (``{"white", "gains", "estimated_on"}`` or ``None``); ``source`` and
    ``target`` (the parameters, as in :func:`stain_reference`; ``None`` when ``method=None``);
    ``reference`` (``"default"``, the reference's sample name, or ``"user"``); ``fit_mpp``, ``mpp`` and
    ``n_pixels``. Nothing is written when the call fails.

    Examples
    --------
    >>> import hist2st_tk as ht
    >>> sdata = ht.datasets.synthetic(n_spots=64, n_genes=12)
    >>> ht.pp.normalize_stain(sdata, method="reinhard")
    >>> normalise = ht.pp.stain_normalizer(sdata, "synthetic_he")
    >>> normalise(sdata.images["synthetic_he"].values[:, :224, :224].transpose(1, 2, 0)).shape
    (224, 224, 3)
    """
    _check_method(method, allow_none=True)
    if method is None and not white_balance:
        msg = "Nothing to do: pass `method='macenko'` or `'reinhard'`, or `white_balance=True`."
        raise ValueError(msg)
    if method is None and reference is not None:
        msg = "`reference` is only used with `method='macenko'` or `'reinhard'`; drop it or pass a method."
        raise ValueError(msg)
    key = resolve_image_key(sdata, image_key)
    target, label = (
        (None, None) if method is None else _target(reference, method, white_balance=white_balance)
    )
    fit = _fit_section(sdata, key, method=method, white_balance=white_balance)
    record = {
        "method": method,
        "white_balance": fit["white_balance"],
        "source": fit["params"],
        "target": target,
        "reference": label,
        "fit_mpp": fit["fit_mpp"],
        "mpp": fit["mpp"],
        "n_pixels": fit["n_pixels"],
    }
    StainNormalizer(record)  # fails here, before anything is written, if the record is unusable

    sdata.attrs.setdefault(ATTRS_KEY, {}).setdefault("stain", {})[key] = record
    log_added(f"attrs[{ATTRS_KEY!r}]['stain'][{key!r}]")


def stain_normalizer(sdata: SpatialData, image_key: str | None = None) -> StainNormalizer | None:
    """The stain normaliser :func:`normalize_stain` recorded for an image, or ``None`` when there is none.

    Returns
    -------
    A picklable callable (it can go to DataLoader worker processes) taking uint8 RGB patches of shape
    ``(H, W, 3)`` or ``(N, H, W, 3)`` and returning uint8 of the same shape.
    """
    key = resolve_image_key(sdata, image_key)
    record = sdata.attrs.get(ATTRS_KEY, {}).get("stain", {}).get(key)
    return None if record is None else StainNormalizer(record)


class StainNormalizer:
    """A fixed per-pixel colour transform rebuilt from the record of :func:`normalize_stain`.

    White balance, optical density and linearisation are table look-ups per channel; the stain
    transform is one 3 x 3 matrix product (Macenko) or an affine map in CIELAB (Reinhard). Pickles as
    its record only.
    """

    def __init__(self, record: Mapping[str, Any]):
        self.record = copy.deepcopy(dict(record))
        self.method = self.record.get("method")
        _check_method(self.method, allow_none=True)
        balance = self.record.get("white_balance")
        gains = np.ones(3) if balance is None else _vector(balance, "gains", 3)
        if self.method is None and balance is None:
            msg = "The stain record holds neither a method nor a white balance."
            raise ValueError(msg)
        source, target = self.record.get("source"), self.record.get("target")
        if self.method == "macenko":
            self._lut, self._matrix, self._io = _macenko_transform(gains, source, target)
        elif self.method == "reinhard":
            self._lut, self._matrix, self._offset = _reinhard_transform(gains, source, target)
            self._encode = _encode_table()
        else:
            self._lut = np.rint(_balanced(gains)).astype(np.uint8).ravel()

    def __call__(self, patch: np.ndarray) -> np.ndarray:
        array = np.asarray(patch)
        if array.dtype != np.uint8:
            msg = f"The stain normaliser takes uint8 RGB patches, got dtype {array.dtype}."
            raise TypeError(msg)
        if array.ndim not in (3, 4) or array.shape[-1] != 3:
            msg = f"The stain normaliser takes patches of shape (H, W, 3) or (N, H, W, 3), got {array.shape}."
            raise ValueError(msg)
        pixels = array.reshape(-1, 3)
        out = np.empty_like(pixels)
        # Chunks that stay in cache: one pass over a whole batch is several times slower per pixel.
        for start in range(0, len(pixels), _CHUNK_PIXELS):
            out[start : start + _CHUNK_PIXELS] = self._transform(pixels[start : start + _CHUNK_PIXELS])
        return out.reshape(array.shape)

    def _transform(self, pixels: np.ndarray) -> np.ndarray:
        # One flat table for the three channels: channel c of value v sits at 256 * c + v.
        values = self._lut[pixels + np.array([0, 256, 512], dtype=np.intp)]
        if self.method == "macenko":
            out = self._io * np.exp(-(values @ self._matrix)) - 1.0
            return np.clip(np.rint(out), 0, 255).astype(np.uint8)
        if self.method == "reinhard":
            linear = _lab_to_linear(_linear_to_f(values) @ self._matrix + self._offset)
            steps = np.clip(linear * (_ENCODE_STEPS - 1) + 0.5, 0, _ENCODE_STEPS - 1).astype(np.intp)
            return self._encode[steps]
        return values

    def __getstate__(self) -> dict:
        return {"record": self.record}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["record"])

    def __repr__(self) -> str:
        balance = "on" if self.record.get("white_balance") else "off"
        return f"StainNormalizer(method={self.method!r}, white_balance={balance}, reference={self.record.get('reference')!r})"


# --- fitting ------------------------------------------------------------------------------------


def _fit_section(sdata: SpatialData, image_key: str, *, method: str | None, white_balance: bool) -> dict:
    """Source parameters of a section over its tissue, and its white balance."""
    low, mask = low_res_with_mask(sdata, image_key, target_mpp=FIT_MPP)
    balance = _estimate_white_balance(low.rgb, mask, image_key) if white_balance else None
    gains = np.ones(3) if balance is None else np.asarray(balance["gains"])
    tissue = _subsample(_stained(low.rgb[mask], gains))
    if method == "macenko":
        # After white balance the glass is 255; with io = 256 it has zero optical density.
        io = BALANCED_IO if balance is not None else MACENKO_IO
        params = _fit_macenko(_lookup(_od_table(gains, io), tissue), image_key, io=io)
    elif method == "reinhard":
        params = _fit_reinhard(_lookup(_linear_table(gains), tissue), image_key)
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
    _check_params(params, "macenko", f"the Macenko fit of image {image_key!r}")
    return params


def _fit_reinhard(linear: np.ndarray, image_key: str) -> dict:
    """CIELAB mean and standard deviation of ``(n, 3)`` linear RGB values."""
    _check_enough(len(linear), image_key, "tissue")
    lab = _linear_to_f(linear.astype(np.float64)) @ _F_TO_LAB.T + _LAB_OFFSET
    params = {"lab_mean": lab.mean(axis=0).tolist(), "lab_std": lab.std(axis=0).tolist()}
    _check_params(params, "reinhard", f"the Reinhard fit of image {image_key!r}")
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


def _stained(pixels: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Tissue pixels that carry stain: neither glass-white (after white balance) nor masked black.

    The tissue mask's rim and the tissue's holes hold glass, which would bias the colour statistics.
    """
    darkest = (pixels * gains).min(axis=1)
    return pixels[(darkest <= WHITE_MIN) & (pixels.max(axis=1) >= BLACK_MAX)]


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


# --- references ---------------------------------------------------------------------------------


def _target(reference, method: str, *, white_balance: bool) -> tuple[dict, str]:
    """Target parameters and how the reference is named in the record."""
    from spatialdata import SpatialData

    if reference is None:
        params = {**DEFAULT_MACENKO, **_MACENKO_SCALARS} if method == "macenko" else DEFAULT_REINHARD
        return copy.deepcopy(params), "default"
    if isinstance(reference, SpatialData):
        reference = stain_reference(reference, method=method, white_balance=white_balance)
    if not isinstance(reference, dict):
        msg = (
            "`reference` must be None, a SpatialData or a dict from `ht.pp.stain_reference`, "
            f"got {type(reference).__name__}."
        )
        raise TypeError(msg)
    if reference.get("method") != method:
        msg = (
            f"The reference was fitted with method {reference.get('method')!r} but `method={method!r}`; "
            f"fit one with `ht.pp.stain_reference(reference_sdata, method={method!r})`."
        )
        raise ValueError(msg)
    names = _PARAM_SHAPES[method]
    params = {name: copy.deepcopy(reference.get(name)) for name in names}
    if method == "macenko":
        params.update({k: float(reference.get(k, d)) for k, d in _MACENKO_SCALARS.items()})
    _check_params(params, method, "the reference")
    return params, str(reference.get("sample") or "user")


_PARAM_SHAPES = {
    "macenko": {"stain_matrix": (3, 2), "max_concentrations": (2,)},
    "reinhard": {"lab_mean": (3,), "lab_std": (3,)},
}
_MACENKO_SCALARS = {"io": MACENKO_IO, "beta": MACENKO_BETA, "alpha": MACENKO_ALPHA}


def _check_params(params: Mapping[str, Any] | None, method: str, what: str) -> None:
    """Raise unless ``params`` holds every parameter of ``method`` with its shape, finite."""
    if not isinstance(params, dict):
        msg = f"{what} holds no {method} parameters."
        raise ValueError(msg)
    for name, shape in _PARAM_SHAPES[method].items():
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


def _check_method(method, *, allow_none: bool) -> None:
    if method is None and allow_none:
        return
    if method not in STAIN_METHODS:
        valid = list(STAIN_METHODS) + ([None] if allow_none else [])
        msg = f"Unknown stain normalisation method {method!r}; use one of {valid}."
        raise ValueError(msg)


def _sample(image_key: str) -> str:
    return image_key.removesuffix("_he")


# --- per-pixel transforms -----------------------------------------------------------------------


def _vector(record: Mapping[str, Any], name: str, size: int) -> np.ndarray:
    value = np.asarray(record.get(name), dtype=np.float64)
    if value.shape != (size,) or not np.isfinite(value).all():
        msg = f"The stain record's {name!r} must be {size} finite numbers, got {record.get(name)!r}."
        raise ValueError(msg)
    return value


def _balanced(gains: np.ndarray) -> np.ndarray:
    """``(3, 256)`` white-balanced value of each channel value, in ``[0, 255]``."""
    return np.clip(np.arange(256.0)[None, :] * gains[:, None], 0.0, 255.0)


def _od_table(gains: np.ndarray, io: float) -> np.ndarray:
    """Flat ``(768,)`` optical density of each (channel, value) after white balance."""
    return (-np.log((_balanced(gains) + 1.0) / io)).astype(np.float32).ravel()


def _linear_table(gains: np.ndarray) -> np.ndarray:
    """Flat ``(768,)`` linear light of each (channel, value) after white balance (sRGB decoding)."""
    value = _balanced(gains) / 255.0
    linear = np.where(value > 0.04045, ((value + 0.055) / 1.055) ** 2.4, value / 12.92)
    return linear.astype(np.float32).ravel()


def _encode_table() -> np.ndarray:
    """uint8 sRGB value of ``_ENCODE_STEPS`` evenly spaced linear light levels in ``[0, 1]``."""
    linear = np.linspace(0.0, 1.0, _ENCODE_STEPS)
    value = np.where(linear > 0.0031308, 1.055 * linear ** (1 / 2.4) - 0.055, 12.92 * linear)
    return np.clip(np.rint(value * 255), 0, 255).astype(np.uint8)


def _lookup(table: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    return table[pixels.reshape(-1, 3) + np.array([0, 256, 512], dtype=np.intp)]


def _linear_to_f(linear: np.ndarray) -> np.ndarray:
    """CIELAB's ``f(X / Xn), f(Y / Yn), f(Z / Zn)`` of linear sRGB values."""
    xyz = linear @ _TO_XYZ.T.astype(linear.dtype)
    return np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)


def _lab_to_linear(f: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_linear_to_f`."""
    xyz = np.where(f > 0.2068966, f * f * f, (f - 16.0 / 116.0) / 7.787)
    return xyz @ _FROM_XYZ.T.astype(f.dtype)


def _macenko_transform(gains: np.ndarray, source, target) -> tuple[np.ndarray, np.ndarray, float]:
    """OD table and the 3 x 3 matrix mapping source OD to target OD (through the concentrations)."""
    _check_params(source, "macenko", "The stain record's source")
    _check_params(target, "macenko", "The stain record's target")
    io = float(source.get("io", MACENKO_IO))
    source_matrix = np.asarray(source["stain_matrix"], dtype=np.float64)
    scale = np.asarray(target["max_concentrations"]) / np.asarray(source["max_concentrations"])
    to_concentrations = np.linalg.pinv(source_matrix).T
    matrix = to_concentrations @ np.diag(scale) @ np.asarray(target["stain_matrix"], dtype=np.float64).T
    return _od_table(gains, io), matrix.astype(np.float32), float(target.get("io", io))


def _reinhard_transform(gains: np.ndarray, source, target) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear-light table and the affine map, in CIELAB's ``f`` space, of the Lab mean/std matching."""
    _check_params(source, "reinhard", "The stain record's source")
    _check_params(target, "reinhard", "The stain record's target")
    gain = np.asarray(target["lab_std"]) / np.asarray(source["lab_std"])
    shift = np.asarray(target["lab_mean"]) - gain * np.asarray(source["lab_mean"])
    # Lab = F @ T.T + o; Lab' = gain * Lab + shift; F' = (Lab' - o) @ inv(T).T, folded into F' = F @ M + b.
    inverse = np.linalg.inv(_F_TO_LAB).T
    matrix = _F_TO_LAB.T @ np.diag(gain) @ inverse
    offset = (gain * _LAB_OFFSET + shift - _LAB_OFFSET) @ inverse
    return _linear_table(gains), matrix.astype(np.float32), offset.astype(np.float32)
