"""Tissue versus background on a low-resolution version of the H&E image.

A pixel is tissue when it is stained (HSV saturation above an Otsu threshold) or textured (local
contrast of its grey value above an Otsu threshold). Colour alone misses pale, loose stroma on a
tinted glass; texture alone misses smooth stain. Near-black pixels are background: many slides have
their background masked black, where saturation means nothing. Near-white pixels are bare glass or fat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING

import numpy as np

from .._constants import ATTRS_KEY
from .._docs import doc_params
from .._logging import log_added
from .._scale import get_mpp
from .._sdata import image_levels, resolve_image_key

if TYPE_CHECKING:
    from spatialdata import SpatialData

#: A pixel whose brightest channel is below this is masked (black) background.
BLACK_MAX = 30
#: A pixel whose darkest channel is above this is bare glass (or unstained fat).
WHITE_MIN = 235
#: Thresholds never go below these floors, so that the noise of an empty slide is not split in two.
MIN_SATURATION = 0.05
MIN_CONTRAST = 3.0
#: Width (Gaussian sigma) of the window in which the local contrast is measured, in microns.
CONTRAST_SIGMA_UM = 12.0
#: Defaults of :func:`tissue_mask`: microns per pixel of the mask, smallest piece of tissue or hole kept.
MASK_MPP = 8.0
MIN_AREA_UM2 = 20_000.0
#: Suffix of the tissue labels element (``"{sample}_tissue"``).
TISSUE_SUFFIX = "_tissue"


@dataclass(frozen=True)
class LowRes:
    """An image read at about ``target_mpp``: RGB ``(h, w, 3)`` uint8 and where its pixels lie.

    A pixel of ``rgb`` covers ``downscale = (sy, sx)`` full-resolution pixels; it was read from the pyramid
    ``level``, block-averaged by ``factor``.
    """

    rgb: np.ndarray
    level: int
    factor: int
    downscale: tuple[float, float]
    mpp: float

    @property
    def pixel_mpp(self) -> float:
        """Microns per pixel of ``rgb``."""
        return self.mpp * float(np.mean(self.downscale))


@doc_params
def tissue_mask(
    sdata: SpatialData,
    *,
    image_key: str | None = None,
    target_mpp: float = MASK_MPP,
    min_area_um2: float = MIN_AREA_UM2,
    key_added: str | None = None,
) -> None:
    """Detect the tissue of a section on a low-resolution version of its H&E image.

    The image is read from the coarsest pyramid level that is at least as fine as ``target_mpp``,
    block-averaged to about ``target_mpp`` microns per pixel. A pixel is tissue when its HSV saturation
    or its local grey-level contrast (standard deviation in a Gaussian window of 12 um) is above its
    Otsu threshold (at least 0.05 and 3 grey levels). Pixels whose brightest channel is below 30
    (background masked black) or whose darkest channel is above 235 (bare glass) are background.
    Pieces of tissue smaller than ``min_area_um2`` are dropped, and holes smaller than it are filled.

    Parameters
    ----------
    sdata
        The section; the image's microns per pixel must be known (:func:`hist2st_tk.io.set_mpp`).
    {image_key}
    target_mpp
        Microns per pixel of the mask (approximately: it is a whole pyramid level block-averaged by a
        whole factor).
    min_area_um2
        Smallest piece of tissue kept, and smallest hole in the tissue kept, in square microns.
    key_added
        Name of the labels element; ``"{sample}_tissue"`` by default, where ``sample`` is the image key
        without its ``"_he"`` suffix.

    Returns
    -------
    ``None``. Writes

    - ``labels[key_added]``: uint8 ``(y, x)`` mask, 1 = tissue, 0 = background, with a
      :class:`~spatialdata.transformations.Scale` to every coordinate system of the image, so that it
      overlays the full-resolution image;
    - ``attrs["hist2st_tk"]["tissue"][key_added]``: ``image_key``, ``mpp`` (of the full-resolution image),
      ``mask_mpp``, ``target_mpp``, ``level``, ``factor``, ``downscale`` (full-resolution pixels per mask
      pixel, y and x), ``threshold`` (``{"saturation", "contrast"}``), ``min_area_um2`` and
      ``tissue_fraction``.

    Nothing is written when the call fails, e.g. when no tissue is found.

    Examples
    --------
    >>> import hist2st_tk as ht
    >>> sdata = ht.datasets.synthetic(n_spots=64, n_genes=12)
    >>> ht.pp.tissue_mask(sdata, target_mpp=4)
    >>> sorted(sdata.labels)
    ['synthetic_tissue']
    """
    key = resolve_image_key(sdata, image_key)
    target_mpp = check_positive(target_mpp, "target_mpp")
    min_area_um2 = check_positive(min_area_um2, "min_area_um2", allow_zero=True)
    labels_key = key_added if key_added is not None else default_tissue_key(key)
    _check_free_name(sdata, labels_key)

    low = read_low_res(sdata, key, target_mpp=target_mpp)
    mask, thresholds = detect_tissue(low.rgb, pixel_mpp=low.pixel_mpp, min_area_um2=min_area_um2)
    _raise_if_empty(mask, key, low)
    labels = _labels_element(sdata, key, mask, low.downscale)
    params = {
        "image_key": key,
        "mpp": low.mpp,
        "mask_mpp": low.pixel_mpp,
        "target_mpp": target_mpp,
        "level": low.level,
        "factor": low.factor,
        "downscale": [float(s) for s in low.downscale],
        "threshold": thresholds,
        "min_area_um2": min_area_um2,
        "tissue_fraction": float(mask.mean()),
    }

    sdata.labels[labels_key] = labels
    sdata.attrs.setdefault(ATTRS_KEY, {}).setdefault("tissue", {})[labels_key] = params
    log_added(f"labels[{labels_key!r}]", mask.shape)
    log_added(f"attrs[{ATTRS_KEY!r}]['tissue'][{labels_key!r}]")


def default_tissue_key(image_key: str) -> str:
    """``"{sample}_tissue"`` for an image ``"{sample}_he"``, else ``"{image_key}_tissue"``."""
    return f"{image_key.removesuffix('_he')}{TISSUE_SUFFIX}"


def tissue_pixels(sdata: SpatialData, image_key: str, *, target_mpp: float) -> np.ndarray:
    """RGB pixels of the tissue of an image at about ``target_mpp``, shape ``(n, 3)`` uint8.

    Uses the mask stored by :func:`tissue_mask` when there is one; otherwise detects the tissue (with
    the defaults of :func:`tissue_mask`) without writing anything.
    """
    low, mask = low_res_with_mask(sdata, image_key, target_mpp=target_mpp)
    return low.rgb[mask]


def low_res_with_mask(sdata: SpatialData, image_key: str, *, target_mpp: float) -> tuple[LowRes, np.ndarray]:
    """The image at about ``target_mpp`` and its boolean tissue mask of the same ``(h, w)``.

    The stored mask (resampled, nearest neighbour) when :func:`tissue_mask` was called for this image,
    else one detected here as :func:`tissue_mask` would, on the image block-averaged to about 8 um/px.
    Raises when there is no tissue.
    """
    key = resolve_image_key(sdata, image_key)
    low = read_low_res(sdata, key, target_mpp=check_positive(target_mpp, "target_mpp"))
    stored = stored_mask(sdata, key)
    if stored is not None:
        mask = resample_nearest(stored, low.rgb.shape[:2])
    else:
        # Detection at the mask's usual resolution is faster, and its thresholds were tuned there.
        factor = max(1, round(MASK_MPP / low.pixel_mpp))
        coarse, _ = detect_tissue(
            _block_mean(low.rgb, factor), pixel_mpp=low.pixel_mpp * factor, min_area_um2=MIN_AREA_UM2
        )
        mask = coarse.repeat(factor, axis=0).repeat(factor, axis=1)[: low.rgb.shape[0], : low.rgb.shape[1]]
    _raise_if_empty(mask, key, low)
    return low, mask


def read_low_res(sdata: SpatialData, image_key: str, *, target_mpp: float) -> LowRes:
    """Read an image at about ``target_mpp`` microns per pixel, as ``(h, w, 3)`` uint8.

    The coarsest pyramid level at least as fine as ``target_mpp`` (or the full resolution, when even
    that is coarser), block-averaged by the whole factor closest to the rest of the way. The averaging
    runs on the lazy (dask) level, so a whole-slide image is never loaded at full resolution.
    """
    mpp, _ = get_mpp(sdata, image_key)
    levels = image_levels(sdata.images[image_key])
    if levels[0].sizes.get("c") != 3:
        msg = f"Image {image_key!r} is not RGB: it has {levels[0].sizes.get('c')} channels, 3 needed."
        raise ValueError(msg)
    full = (levels[0].sizes["y"], levels[0].sizes["x"])
    ratios = [(full[0] / lv.sizes["y"], full[1] / lv.sizes["x"]) for lv in levels]
    fine_enough = [i for i, r in enumerate(ratios) if mpp * float(np.mean(r)) <= target_mpp * 1.001]
    level = fine_enough[-1] if fine_enough else 0
    level_mpp = mpp * float(np.mean(ratios[level]))
    factor = max(1, round(target_mpp / level_mpp))
    data = levels[level]
    if factor > 1:
        data = data.coarsen(y=factor, x=factor, boundary="trim").mean()
    rgb = np.asarray(data.transpose("y", "x", "c").values)
    if rgb.dtype != np.uint8:
        rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    downscale = (ratios[level][0] * factor, ratios[level][1] * factor)
    return LowRes(rgb=rgb, level=level, factor=factor, downscale=downscale, mpp=mpp)


def detect_tissue(rgb: np.ndarray, *, pixel_mpp: float, min_area_um2: float) -> tuple[np.ndarray, dict]:
    """Boolean tissue mask of an ``(h, w, 3)`` uint8 image and the two thresholds used."""
    from scipy import ndimage as ndi

    pixels = rgb.astype(np.float32)
    brightest, darkest = pixels.max(axis=-1), pixels.min(axis=-1)
    black = brightest < BLACK_MAX
    white = darkest > WHITE_MIN
    # Black background gets the saturation and grey value of nothing, so it sorts with the glass.
    saturation = np.where(black, 0.0, (brightest - darkest) / np.maximum(brightest, 1.0))
    grey = np.where(black, 0.0, pixels.mean(axis=-1))
    sigma = max(1.0, CONTRAST_SIGMA_UM / pixel_mpp)
    mean = ndi.gaussian_filter(grey, sigma)
    contrast = np.sqrt(np.clip(ndi.gaussian_filter(grey * grey, sigma) - mean * mean, 0.0, None))

    t_saturation = _otsu(saturation, floor=MIN_SATURATION)
    # Contrast is heavy-tailed (edges, nuclei); its Otsu split is taken on a log scale.
    t_contrast = float(np.expm1(_otsu(np.log1p(contrast), floor=math.log1p(MIN_CONTRAST))))
    mask = ((saturation > t_saturation) | (contrast > t_contrast)) & ~black & ~white

    min_px = min_area_um2 / pixel_mpp**2
    mask = _drop_small(mask, min_px)
    mask = ~_drop_small(~mask, min_px)
    return mask, {"saturation": float(t_saturation), "contrast": t_contrast}


def _block_mean(rgb: np.ndarray, factor: int) -> np.ndarray:
    """``(h, w, 3)`` uint8 averaged over ``factor x factor`` blocks (edges padded by repetition)."""
    if factor == 1:
        return rgb
    height, width = (-(-n // factor) * factor for n in rgb.shape[:2])
    padded = np.pad(rgb, ((0, height - rgb.shape[0]), (0, width - rgb.shape[1]), (0, 0)), mode="edge")
    blocks = padded.reshape(height // factor, factor, width // factor, factor, 3)
    return np.rint(blocks.mean(axis=(1, 3), dtype=np.float32)).astype(np.uint8)


def _otsu(values: np.ndarray, *, floor: float) -> float:
    from skimage.filters import threshold_otsu

    if float(values.max()) == float(values.min()):
        return floor
    return max(float(threshold_otsu(values)), floor)


def _drop_small(mask: np.ndarray, min_px: float) -> np.ndarray:
    """``mask`` without its connected pieces (8-connected) smaller than ``min_px`` pixels."""
    from scipy import ndimage as ndi

    if min_px <= 1:
        return mask
    labelled, _ = ndi.label(mask, structure=np.ones((3, 3), dtype=bool))
    keep = np.bincount(labelled.ravel()) >= min_px
    keep[0] = False
    return keep[labelled]


def _raise_if_empty(mask: np.ndarray, image_key: str, low: LowRes) -> None:
    if not mask.any():
        msg = (
            f"No tissue found in image {image_key!r} (read at {low.pixel_mpp:.2f} um/px): no pixel is both "
            "stained or textured and neither near-white nor near-black. Check that the image shows H&E "
            "tissue, or lower `min_area_um2`."
        )
        raise ValueError(msg)


def stored_mask(sdata: SpatialData, image_key: str) -> np.ndarray | None:
    """The last tissue mask :func:`tissue_mask` stored for ``image_key`` and that still exists."""
    records = sdata.attrs.get(ATTRS_KEY, {}).get("tissue", {})
    keys = [k for k, rec in records.items() if rec.get("image_key") == image_key and k in sdata.labels]
    if not keys:
        default = default_tissue_key(image_key)
        keys = [default] if default in sdata.labels else []
    if not keys:
        return None
    element = image_levels(sdata.labels[keys[-1]])[0]
    return np.asarray(element.values) > 0


def resample_nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of a mask that covers the same image extent to ``shape``."""
    if mask.shape == shape:
        return mask
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * mask.shape[0] / shape[0]).astype(int), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * mask.shape[1] / shape[1]).astype(int), mask.shape[1] - 1)
    return mask[np.ix_(rows, cols)]


def _labels_element(sdata: SpatialData, image_key: str, mask: np.ndarray, downscale: tuple[float, float]):
    """The mask as a Labels element mapped onto every coordinate system of the image."""
    from spatialdata.models import Labels2DModel
    from spatialdata.transformations import Identity, Scale, Sequence, get_transformation

    scale = Scale([downscale[0], downscale[1]], axes=("y", "x"))
    transformations = {
        system: scale if isinstance(to_system, Identity) else Sequence([scale, to_system])
        for system, to_system in get_transformation(sdata.images[image_key], get_all=True).items()
    }
    return Labels2DModel.parse(mask.astype(np.uint8), dims=("y", "x"), transformations=transformations)


def _check_free_name(sdata: SpatialData, name: str) -> None:
    """Refuse a name that another kind of element already uses (spatialdata names are unique)."""
    taken = {kind: list(getattr(sdata, kind)) for kind in ("images", "points", "shapes", "tables")}
    for kind, names in taken.items():
        if name in names:
            msg = f"{name!r} already names one of the {kind} of the SpatialData; pass another `key_added`."
            raise ValueError(msg)


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        msg = f"`{name}` must be a number, got {value!r}."
        raise TypeError(msg)
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        msg = f"`{name}` must be a {bound}, finite number, got {value!r}."
        raise ValueError(msg)
    return number
