"""A grid of square tiles over the tissue of an H&E-only slide, recorded as its spots."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._constants import ATTRS_KEY, INSTANCE_KEY, PATIENT_KEY, REGION_KEY, SAMPLE_KEY, TABLE_KEY
from .._docs import doc_params
from .._logging import log_added, logger
from .._scale import get_mpp
from .._sdata import image_levels, resolve_image_key
from .._validate import check_microns
from ._tissue import (
    MIN_AREA_UM2,
    check_positive,
    detect_tissue,
    read_low_res,
    resample_nearest,
    stored_mask,
)

if TYPE_CHECKING:
    import anndata as ad
    from spatialdata import SpatialData

#: Suffix of the shapes element of the tiles (``"{sample}_tiles"``).
TILES_SUFFIX = "_tiles"
#: Default microns per pixel of the tissue mask: a 50 mm slide gives a mask of about 3,000 x 3,000 px,
#: whose detection stays within a few hundred MB (at 8 um/px it takes about 2 GB).
TILE_MASK_MPP = 16.0


@doc_params
def tile_tissue(
    sdata: SpatialData,
    *,
    tile_um: float = 112.0,
    stride_um: float | None = None,
    image_key: str | None = None,
    min_tissue: float = 0.5,
    mask_mpp: float = TILE_MASK_MPP,
    patient: str | None = None,
    table_key: str = TABLE_KEY,
) -> None:
    """Cover the tissue of a slide with a grid of square tiles, recorded as the slide's spots.

    The grid starts at the image's top-left corner and steps by ``stride_um``; only tiles that lie wholly
    inside the image and whose tissue fraction is at least ``min_tissue`` are kept. The tissue is the mask
    stored by :func:`tissue_mask` for this image when there is one, else one detected here the same way
    (without storing it) on the image read at about ``mask_mpp`` microns per pixel; the tissue fraction
    of a tile is the fraction of the mask pixels whose centres fall inside it.

    The tiles then act as spots: :func:`image_features` (with ``patch_um=tile_um`` the patch is the tile),
    :func:`hist2st_tk.tl.predict_expression` and the plots work on them unchanged.

    Parameters
    ----------
    sdata
        The slide, e.g. from :func:`hist2st_tk.io.read_wsi`; the image's microns per pixel must be known.
    tile_um
        Edge of the tiles in microns.
    stride_um
        Distance between the corners of neighbouring tiles in microns; ``tile_um`` by default (tiles
        touch). A smaller stride makes tiles overlap.
    {image_key}
    min_tissue
        Smallest tissue fraction of a kept tile, in ``[0, 1]``.
    mask_mpp
        Microns per pixel at which the tissue is detected when no mask is stored.
    patient
        Patient the slide comes from (defaults to the sample name).
    table_key
        Name of the table written.

    Returns
    -------
    ``None``. Writes, with ``sample`` the image key without its ``"_he"`` suffix:

    - ``shapes["{sample}_tiles"]``: one circle per tile, centred on it, of radius half the tile edge
      (image pixels), indexed by tile id ``"tile_{row}_{col}"``; in row-major order;
    - ``tables[table_key]``: an AnnData with no genes annotating the tiles (``region``, ``spot_id``), with
      ``obs["sample"]``, ``obs["patient"]``, ``obs["tissue_fraction"]``, ``obs["array_x"]``,
      ``obs["array_y"]`` (grid column and row) and ``obsm["spatial"]`` (tile centres, pixel x, y);
    - ``attrs["hist2st_tk"]["tiles"][table_key]``: ``image_key``, ``tile_um``, ``stride_um``, ``tile_px``,
      ``mpp``, ``mpp_source``, ``min_tissue``, ``mask_mpp`` (of the mask used), ``n_tiles``.

    When no tile has enough tissue, a warning is logged and the table is written empty, annotating
    nothing, and no shapes are written (spatialdata has no empty shapes element nor empty annotation).
    Nothing is written when the call fails.

    Examples
    --------
    >>> import hist2st_tk as ht
    >>> sdata = ht.datasets.synthetic(n_spots=64, n_genes=4)
    >>> del sdata.tables["table"]
    >>> ht.pp.tile_tissue(sdata, tile_um=100, mask_mpp=4)
    >>> sdata["table"].n_obs > 0
    True
    """
    key = resolve_image_key(sdata, image_key)
    tile_um = check_microns(tile_um, "tile_um")
    stride_um = tile_um if stride_um is None else check_microns(stride_um, "stride_um")
    mask_mpp = check_positive(mask_mpp, "mask_mpp")
    min_tissue = check_fraction(min_tissue)
    sample = key.removesuffix("_he")
    shapes_key = f"{sample}{TILES_SUFFIX}"
    _check_free(sdata, shapes_key, table_key)
    mpp, source = get_mpp(sdata, key)

    height, width = image_levels(sdata.images[key])[0].shape[-2:]
    tile_px, stride_px = tile_um / mpp, stride_um / mpp
    if tile_px > min(height, width):
        msg = f"Tiles of {tile_um:g} um ({tile_px:.0f} px) do not fit in the {width} x {height} px image {key!r}."
        raise ValueError(msg)
    fraction, mask_pixel_mpp = _tile_fractions(sdata, key, (height, width), tile_px, stride_px, mask_mpp)
    rows, cols = np.nonzero(fraction >= min_tissue)
    if not len(rows):
        logger.warning(
            "No tile of image %r has a tissue fraction of at least %g: the tiles and the table are empty. "
            "Check that the slide shows H&E tissue, or lower `min_tissue`.",
            key,
            min_tissue,
        )
    ids = pd.Index([f"tile_{r}_{c}" for r, c in zip(rows, cols, strict=True)])
    centres = np.column_stack([cols * stride_px + tile_px / 2, rows * stride_px + tile_px / 2]).astype(
        np.float64
    )
    from ..io._elements import spot_circles

    # spatialdata has no empty shapes element: a slide without tissue gets its empty table only
    circles = spot_circles(centres.reshape(-1, 2), tile_px / 2, ids) if len(ids) else None
    table = _tiles_table(
        ids,
        centres,
        rows=rows,
        cols=cols,
        fraction=fraction[rows, cols],
        sample=sample,
        patient=patient or sample,
        region=shapes_key,
    )
    params = {
        "image_key": key,
        "tile_um": tile_um,
        "stride_um": stride_um,
        "tile_px": tile_px,
        "mpp": mpp,
        "mpp_source": source,
        "min_tissue": min_tissue,
        "mask_mpp": mask_pixel_mpp,
        "n_tiles": len(ids),
    }

    if circles is not None:
        sdata.shapes[shapes_key] = circles
        log_added(f"shapes[{shapes_key!r}]", (len(ids),))
    sdata.tables[table_key] = table
    sdata.attrs.setdefault(ATTRS_KEY, {}).setdefault("tiles", {})[table_key] = params
    log_added(f"tables[{table_key!r}]", table.shape)
    log_added(f"attrs[{ATTRS_KEY!r}]['tiles'][{table_key!r}]")


def _tile_fractions(
    sdata: SpatialData,
    image_key: str,
    shape: tuple[int, int],
    tile_px: float,
    stride_px: float,
    mask_mpp: float,
) -> tuple[np.ndarray, float]:
    """Tissue fraction of every tile of the grid, ``(n_rows, n_cols)``, and the mask's microns per pixel."""
    low = read_low_res(sdata, image_key, target_mpp=mask_mpp)
    stored = stored_mask(sdata, image_key)
    if stored is not None:
        mask = resample_nearest(stored, low.rgb.shape[:2])
    else:
        mask, _ = detect_tissue(low.rgb, pixel_mpp=low.pixel_mpp, min_area_um2=MIN_AREA_UM2)
    height, width = shape
    n_rows = int((height - tile_px) // stride_px) + 1
    n_cols = int((width - tile_px) // stride_px) + 1
    # summed-area table: the tissue pixels of any box in four look-ups
    summed = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    summed[1:, 1:] = mask.astype(np.int64).cumsum(axis=0).cumsum(axis=1)
    top, bottom = _mask_span(np.arange(n_rows) * stride_px, tile_px, low.downscale[0], mask.shape[0])
    left, right = _mask_span(np.arange(n_cols) * stride_px, tile_px, low.downscale[1], mask.shape[1])
    inside = summed[bottom][:, right] - summed[top][:, right] - summed[bottom][:, left] + summed[top][:, left]
    area = np.outer(bottom - top, right - left)
    return inside / area, low.pixel_mpp


def _mask_span(
    starts: np.ndarray, tile_px: float, downscale: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """First and past-the-last mask pixels whose centres fall in each tile (at least one pixel)."""
    first = np.clip(np.ceil(starts / downscale - 0.5), 0, size - 1).astype(np.int64)
    last = np.clip(np.ceil((starts + tile_px) / downscale - 0.5), 0, size).astype(np.int64)
    return first, np.maximum(last, first + 1)


def _tiles_table(
    ids: pd.Index,
    centres: np.ndarray,
    *,
    rows: np.ndarray,
    cols: np.ndarray,
    fraction: np.ndarray,
    sample: str,
    patient: str,
    region: str,
) -> ad.AnnData:
    """A table without genes annotating the tiles, ready for predictions."""
    import anndata as ad
    from scipy import sparse
    from spatialdata.models import TableModel

    obs = pd.DataFrame(
        {
            SAMPLE_KEY: pd.Categorical([sample] * len(ids)),
            PATIENT_KEY: pd.Categorical([patient] * len(ids)),
            "tissue_fraction": fraction.astype(np.float32),
            "array_x": cols.astype(np.int64),
            "array_y": rows.astype(np.int64),
            REGION_KEY: pd.Categorical([region] * len(ids)),
            INSTANCE_KEY: np.asarray(ids, dtype=object),
        },
        index=ids,
    )
    table = ad.AnnData(X=sparse.csr_matrix((len(ids), 0), dtype=np.float32), obs=obs)
    table.obsm["spatial"] = centres.reshape(-1, 2)
    if not len(ids):  # spatialdata refuses an annotation of no rows: the empty table annotates nothing
        return TableModel.parse(table)
    return TableModel.parse(table, region=region, region_key=REGION_KEY, instance_key=INSTANCE_KEY)


def check_fraction(value: float) -> float:
    number = check_positive(value, "min_tissue", allow_zero=True)
    if number > 1:
        msg = f"`min_tissue` is a fraction of the tile, in [0, 1]; got {value!r}."
        raise ValueError(msg)
    return number


def _check_free(sdata: SpatialData, shapes_key: str, table_key: str) -> None:
    """Refuse to replace existing spots or table: predictions or features may hang on them."""
    for kind, name in (("shapes", shapes_key), ("tables", table_key)):
        if name in getattr(sdata, kind):
            msg = (
                f"The SpatialData already has {kind}[{name!r}]; delete it first (`del sdata.{kind}[{name!r}]`) "
                "or pass another `table_key`."
            )
            raise ValueError(msg)
