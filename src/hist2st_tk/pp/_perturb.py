"""A section as another scanner or lab would have imaged it: coarser pixels, JPEG, blur, a stain shift.

:func:`perturb` returns a new SpatialData whose image is the original one degraded, with its spots and
physical scale moved along, so that a model can be measured on the same tissue imaged differently
(``hist2st bench robustness``). The pixel operations (:func:`hed_jitter` and friends) work on plain
``(h, w, 3)`` uint8 arrays and are shared with training-time augmentation.
"""

from __future__ import annotations

import io as _io
from typing import TYPE_CHECKING

import numpy as np

from .._constants import TABLE_KEY
from .._docs import doc_params
from .._logging import logger
from .._scale import check_mpp, get_mpp, set_mpp
from .._sdata import (
    image_levels,
    resolve_image_key,
    section_image_key,
    spots_key_of,
    written_by_prediction,
)
from .._section import check_section
from .._validate import check_microns

if TYPE_CHECKING:
    from spatialdata import SpatialData

#: Rows of the image converted to HED at a time (bounds the float64 copies of a full-resolution scan).
_STRIP_ROWS = 1024


def hed_factors(strength: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random HED jitter factors of Tellez et al. (2018): per stain (haematoxylin, eosin, DAB) a scale
    ``alpha ~ U(1 - strength, 1 + strength)`` and a shift ``beta ~ U(-strength, strength)``."""
    strength = _check_strength(strength)
    rng = np.random.default_rng(seed)
    return rng.uniform(1 - strength, 1 + strength, 3), rng.uniform(-strength, strength, 3)


def hed_jitter(rgb: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``(h, w, 3)`` uint8 RGB with each stain's optical density ``s`` replaced by ``alpha * s + beta``.

    Colour deconvolution of Ruifrok and Johnston (the stain vectors of :func:`skimage.color.rgb2hed`)
    in base-10 optical density, without clipping negative concentrations, so that ``alpha = 1``,
    ``beta = 0`` gives the image back.
    """
    from skimage.color import hed_from_rgb, rgb_from_hed

    out = np.empty_like(rgb)
    for top in range(0, rgb.shape[0], _STRIP_ROWS):
        strip = np.maximum(rgb[top : top + _STRIP_ROWS].astype(np.float64), 1.0)
        stains = (-np.log10(strip / 255.0) @ hed_from_rgb) * alpha + beta
        restored = 255.0 * np.power(10.0, -(stains @ rgb_from_hed))
        out[top : top + _STRIP_ROWS] = np.clip(np.rint(restored), 0, 255).astype(np.uint8)
    return out


def gaussian_blur(rgb: np.ndarray, sigma_px: float) -> np.ndarray:
    """``(h, w, 3)`` uint8 RGB blurred by a Gaussian of ``sigma_px`` pixels (an out-of-focus scan)."""
    from scipy.ndimage import gaussian_filter

    blurred = gaussian_filter(rgb.astype(np.float32), sigma=(sigma_px, sigma_px, 0), mode="nearest")
    return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """``(h, w, 3)`` uint8 RGB compressed to JPEG at ``quality`` (1-95) and decoded again."""
    from PIL import Image

    buffer = _io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as img:
        return np.asarray(img.convert("RGB"))


def resize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(h, w, 3)`` uint8 RGB resampled to ``(height, width)`` (bilinear; antialiased when shrinking)."""
    from PIL import Image

    if rgb.shape[:2] == (height, width):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))


@doc_params
def perturb(
    sdata: SpatialData,
    *,
    mpp: float | None = None,
    jpeg_quality: int | None = None,
    blur_um: float | None = None,
    stain_jitter: float | None = None,
    seed: int = 0,
    table_key: str = TABLE_KEY,
    image_key: str | None = None,
) -> SpatialData:
    """The section as another scanner or lab would have imaged it, as a new SpatialData.

    The degradations apply in the order of a real acquisition: the stain shift, then the blur, then
    the resampling to ``mpp``, then JPEG compression. The spots are moved to the new pixel grid and the
    new microns per pixel recorded (source ``"user"``). The result holds the image, the spots and the
    table (its ``X``, ``layers``, ``obs``, ``var`` and ``obsm["spatial"]``); features, predictions and
    graphs of the original are left out, since they describe the original pixels. The whole image is decoded.

    Parameters
    ----------
    sdata
        The section (its image needs a known microns per pixel).
    mpp
        Microns per pixel to resample the image to (coarser or finer than the original).
    jpeg_quality
        Compress the image as JPEG at this quality (1-95).
    blur_um
        Standard deviation in microns of a Gaussian blur.
    stain_jitter
        Strength of a HED stain jitter (:func:`hed_factors`; 0.05 is mild, 0.2 strong).
    seed
        Seed of the stain jitter's factors.
    {table_key}
    image_key
        The image to degrade; by default the section's image.

    Returns
    -------
    A new SpatialData; ``sdata`` is left as it was. Its ``attrs["hist2st_tk"]["perturbation"]``
    records what was done (including the drawn stain factors).

    Examples
    --------
    >>> import hist2st_tk as ht
    >>> sdata = ht.datasets.synthetic(n_spots=16, n_genes=4)
    >>> coarse = ht.pp.perturb(sdata, mpp=2 * ht.io.get_mpp(sdata)[0], jpeg_quality=40)
    >>> ht.io.get_mpp(coarse)[0] == 2 * ht.io.get_mpp(sdata)[0]
    True
    """
    table = check_section(sdata, table_key, spots=True)
    key = resolve_image_key(sdata, image_key or section_image_key(sdata, table))
    source_mpp, _ = get_mpp(sdata, key)
    target_mpp = source_mpp if mpp is None else check_mpp(mpp)
    if jpeg_quality is not None and not (1 <= int(jpeg_quality) <= 95):
        msg = f"`jpeg_quality` must be an integer from 1 to 95, got {jpeg_quality!r}."
        raise ValueError(msg)
    blur_um = None if blur_um is None else check_microns(blur_um, "blur_um")
    record: dict = {"source_mpp": source_mpp, "mpp": target_mpp}

    level = image_levels(sdata.images[key])[0]
    # decoding and resampling a whole scan takes a while: say so before
    logger.info("perturbing %s (%d x %d px): decoding the image", key, level.shape[-1], level.shape[-2])
    rgb = np.asarray(level.data).transpose(1, 2, 0)
    source_shape = rgb.shape[:2]
    if stain_jitter is not None:
        alpha, beta = hed_factors(stain_jitter, seed=seed)
        rgb = hed_jitter(rgb, alpha, beta)
        record["stain_jitter"] = {
            "strength": float(stain_jitter),
            "seed": seed,
            "alpha": alpha.tolist(),
            "beta": beta.tolist(),
        }
    if blur_um is not None:
        rgb = gaussian_blur(rgb, blur_um / source_mpp)
        record["blur_um"] = blur_um
    factor = source_mpp / target_mpp  # new pixels per old pixel
    height, width = (max(int(round(n * factor)), 1) for n in rgb.shape[:2])
    rgb = resize(rgb, height, width)
    if jpeg_quality is not None:
        rgb = jpeg_roundtrip(rgb, int(jpeg_quality))
        record["jpeg_quality"] = int(jpeg_quality)
    scale = (width / source_shape[1], height / source_shape[0])
    out = _rebuilt(sdata, table, table_key, key, rgb, scale)
    set_mpp(out, key, target_mpp, source="user")
    out.attrs.setdefault("hist2st_tk", {})["perturbation"] = record
    logger.info("perturbed %s: %s", key, record)
    return out


def _rebuilt(sdata, table, table_key: str, key: str, rgb: np.ndarray, scale: tuple[float, float]):
    """The image, spots and table of a section on a new pixel grid (``scale`` = new px per old px)."""
    import anndata as ad
    from shapely import affinity
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel, get_table_keys

    from ..io._elements import he_image

    spots_key = spots_key_of(table)
    spots = sdata.shapes[spots_key].copy()
    spots["geometry"] = spots.geometry.apply(lambda g: affinity.scale(g, scale[0], scale[1], origin=(0, 0)))
    if "radius" in spots:
        spots["radius"] = spots["radius"] * float(np.sqrt(scale[0] * scale[1]))
    region, region_key, instance_key = get_table_keys(table)
    new_table = ad.AnnData(
        X=table.X.copy(),
        obs=table.obs.copy(),
        var=table.var.copy(),
        layers={
            name: layer.copy()
            for name, layer in table.layers.items()
            if not written_by_prediction(table, name)
        },
    )
    if "spatial" in table.obsm:
        new_table.obsm["spatial"] = np.asarray(table.obsm["spatial"], dtype=np.float64) * np.asarray(scale)
    new_table = TableModel.parse(new_table, region=region, region_key=region_key, instance_key=instance_key)
    return SpatialData(
        images={key: he_image(np.ascontiguousarray(rgb.transpose(2, 0, 1)))},
        shapes={spots_key: ShapesModel.parse(spots)},
        tables={table_key: new_table},
    )


def _check_strength(strength: float) -> float:
    value = float(strength)
    if not 0 <= value < 1:
        msg = f"The stain jitter strength must be in [0, 1), got {strength!r}."
        raise ValueError(msg)
    return value
