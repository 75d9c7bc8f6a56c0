"""The data contract of a section (docs/data_model.md), checked where a public function starts.

A public function that takes a section calls :func:`check_section` first: it names what is missing
(the SpatialData, the table, the spots the table annotates, an ``obs`` / ``obsm`` / ``obsp`` key) and
the call that makes it, before anything is computed or written.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from ._constants import (
    GENES_KEY,
    NEIGHBORS_SUFFIX,
    PATIENT_KEY,
    PREDICTED_PREFIX,
    SAMPLE_KEY,
    SPATIAL_KEY,
    TABLE_KEY,
    TUMOR_KEY,
    TUMOR_SCORE_KEY,
)
from ._sdata import get_table

if TYPE_CHECKING:
    import anndata as ad
    from spatialdata import SpatialData

_READERS = "the readers (`ht.io.read_st`, `ht.io.read_visium`, `ht.datasets.her2st`) write it"

#: The call that writes each key of the data model, named when the key is missing.
MADE_BY: dict[tuple[str, str], str] = {
    ("obsm", SPATIAL_KEY): _READERS + "; `ht.pp.tile_tissue` for a slide's tiles",
    ("obs", SAMPLE_KEY): _READERS,
    ("obs", PATIENT_KEY): _READERS + " (pass `patient=`)",
    ("obs", TUMOR_KEY): "`ht.tl.tumor_regions(sdata)` calls it, or the dataset's region labels give it",
    ("obs", TUMOR_SCORE_KEY): "`ht.tl.tumor_regions(sdata)` writes it",
    ("var", GENES_KEY): "`ht.pp.select_genes(sdatas)` writes it",
    ("obs", "leiden"): "scanpy's `sc.tl.leiden(sdata['table'], ...)` writes it",
}


def made_by(attribute: str, key: str) -> str:
    """The call that writes ``table.{attribute}[key]``, as a clause for an error message."""
    if (attribute, key) in MADE_BY:
        return MADE_BY[attribute, key]
    if attribute == "obsp":
        return "`ht.pp.spatial_graph(sdata, ...)` builds the spatial graph"
    if attribute == "obsm" and key.startswith(PREDICTED_PREFIX):
        return "`ht.tl.predict_expression(sdata, model)` writes predictions"
    if attribute == "obsm" and key.endswith(NEIGHBORS_SUFFIX):
        return f"`ht.pp.aggregate_neighbors(sdata, use_rep={key.removesuffix(NEIGHBORS_SUFFIX)!r})` writes it"
    if attribute == "obsm" and key.endswith("_ipca"):
        return "`ht.pp.ipca(sdatas, use_rep=...)` writes it"
    if attribute == "obsm" and key == "X_fourier":
        return "`ht.pp.fourier_features(sdata)` writes it"
    if attribute == "obsm" and key.startswith("X_"):
        return (
            "`ht.pp.image_features(sdata, encoder=...)` writes image features as 'X_{encoder}', and "
            "`ht.pp.model_features(sdata, model)` every feature a model reads"
        )
    return "no function of hist2st_tk writes it"


def require(table: ad.AnnData, table_key: str, attribute: str, keys: Iterable[str]) -> None:
    """Raise a KeyError naming the first of ``keys`` missing from ``table.{attribute}``, the keys there are
    and the call that writes it."""
    present = table.obs.columns if attribute == "obs" else getattr(table, attribute)
    for key in keys:
        if key not in present:
            msg = (
                f"Table {table_key!r} has no {attribute}[{key!r}]: {made_by(attribute, key)}. "
                f"{attribute} keys: {list(present)}."
            )
            raise KeyError(msg)


def spatial_coords(table: ad.AnnData, table_key: str) -> np.ndarray:
    """``obsm["spatial"]`` as finite ``(n, 2)`` float64 pixel coordinates, or an error naming the fix."""
    require(table, table_key, "obsm", [SPATIAL_KEY])
    coords = np.asarray(table.obsm["spatial"], dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2 or not np.isfinite(coords).all():
        msg = (
            f"`obsm['spatial']` of table {table_key!r} must hold finite (x, y) pixel coordinates, "
            f"shape (n_spots, 2); got shape {coords.shape}."
        )
        raise ValueError(msg)
    return coords


def check_section(
    sdata: SpatialData,
    table_key: str = TABLE_KEY,
    *,
    spots: bool = False,
    obs: Iterable[str] = (),
    obsm: Iterable[str] = (),
    obsp: Iterable[str] = (),
) -> ad.AnnData:
    """The table of the section ``sdata`` after checking what the caller needs of it.

    Parameters
    ----------
    sdata
        Must be a SpatialData holding the table ``table_key``.
    table_key
        Name of the table of spots.
    spots
        The table must annotate one shapes element of ``sdata`` (spatialdata's ``region`` and
        ``instance_key``), as every reader writes it; an empty table needs not.
    obs, obsm, obsp
        Keys the table must hold.

    Returns
    -------
    The table; nothing is written.
    """
    table = get_table(sdata, table_key)
    if spots and table.n_obs:  # an empty table (a slide without tissue) annotates nothing
        _check_annotates_spots(sdata, table, table_key)
    require(table, table_key, "obs", obs)
    require(table, table_key, "obsm", obsm)
    require(table, table_key, "obsp", obsp)
    return table


def _check_annotates_spots(sdata: SpatialData, table: ad.AnnData, table_key: str) -> None:
    from spatialdata.models import get_table_keys

    try:
        region, _, _ = get_table_keys(table)
    except (KeyError, ValueError, TypeError):
        msg = (
            f"Table {table_key!r} does not say which spots it annotates (no spatialdata table attrs); build it "
            "with `spatialdata.models.TableModel.parse(table, region=..., region_key=..., instance_key=...)`, "
            "as the readers do."
        )
        raise ValueError(msg) from None
    missing = [r for r in ([region] if isinstance(region, str) else region) if r not in sdata.shapes]
    if missing:
        msg = (
            f"Table {table_key!r} annotates the shapes {missing}, which the SpatialData lacks; shapes: "
            f"{list(sdata.shapes)}. Keep the spots with their table (`sdata.subset([...], filter_tables=True)`)."
        )
        raise KeyError(msg)
