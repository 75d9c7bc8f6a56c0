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
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._constants import ATTRS_KEY
from .._docs import doc_params
from .._logging import log_added
from .._sdata import resolve_image_key
from ._stain_colour import (
    ENCODE_STEPS,
    MACENKO_ALPHA,
    MACENKO_BETA,
    MACENKO_IO,
    PARAM_SHAPES,
    balanced,
    check_params,
    encode_table,
    lab_to_linear,
    linear_to_f,
    macenko_transform,
    reinhard_transform,
)
from ._stain_fit import fit_section

if TYPE_CHECKING:
    from collections.abc import Mapping

    from spatialdata import SpatialData

StainMethod = Literal["macenko", "reinhard"]
STAIN_METHODS: tuple[str, ...] = ("macenko", "reinhard")

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

#: Pixels transformed at a time by a normaliser.
_CHUNK_PIXELS = 1 << 16


@doc_params
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
    {image_key}
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
    fit = fit_section(sdata, key, method=method, white_balance=white_balance)
    return {
        "method": method,
        "sample": _sample(key),
        "image_key": key,
        "white_balance": fit["white_balance"] is not None,
        "fit_mpp": fit["fit_mpp"],
        "n_pixels": fit["n_pixels"],
        **fit["params"],
    }


@doc_params
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
    {image_key}

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
    fit = fit_section(sdata, key, method=method, white_balance=white_balance)
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
            self._lut, self._matrix, self._io = macenko_transform(gains, source, target)
        elif self.method == "reinhard":
            self._lut, self._matrix, self._offset = reinhard_transform(gains, source, target)
            self._encode = encode_table()
        else:
            self._lut = np.rint(balanced(gains)).astype(np.uint8).ravel()

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
            linear = lab_to_linear(linear_to_f(values) @ self._matrix + self._offset)
            steps = np.clip(linear * (ENCODE_STEPS - 1) + 0.5, 0, ENCODE_STEPS - 1).astype(np.intp)
            return self._encode[steps]
        return values

    def __getstate__(self) -> dict:
        return {"record": self.record}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["record"])

    def __repr__(self) -> str:
        balance = "on" if self.record.get("white_balance") else "off"
        return f"StainNormalizer(method={self.method!r}, white_balance={balance}, reference={self.record.get('reference')!r})"


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
    names = PARAM_SHAPES[method]
    params = {name: copy.deepcopy(reference.get(name)) for name in names}
    if method == "macenko":
        params.update({k: float(reference.get(k, d)) for k, d in _MACENKO_SCALARS.items()})
    check_params(params, method, "the reference")
    return params, str(reference.get("sample") or "user")


_MACENKO_SCALARS = {"io": MACENKO_IO, "beta": MACENKO_BETA, "alpha": MACENKO_ALPHA}


def _check_method(method, *, allow_none: bool) -> None:
    if method is None and allow_none:
        return
    if method not in STAIN_METHODS:
        valid = list(STAIN_METHODS) + ([None] if allow_none else [])
        msg = f"Unknown stain normalisation method {method!r}; use one of {valid}."
        raise ValueError(msg)


def _sample(image_key: str) -> str:
    return image_key.removesuffix("_he")


# --- records --------------------------------------------------------------------------------------


def _vector(record: Mapping[str, Any], name: str, size: int) -> np.ndarray:
    value = np.asarray(record.get(name), dtype=np.float64)
    if value.shape != (size,) or not np.isfinite(value).all():
        msg = f"The stain record's {name!r} must be {size} finite numbers, got {record.get(name)!r}."
        raise ValueError(msg)
    return value
