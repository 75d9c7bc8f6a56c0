"""Spatial neighbour graph of the spots, built with squidpy at a physical scale."""

from __future__ import annotations

import copy as _copy
import logging
import warnings
from typing import TYPE_CHECKING, Literal

from .._constants import SPATIAL_KEY, TABLE_KEY
from .._docs import doc_params
from .._logging import log_added
from .._scale import get_mpp
from .._sdata import section_image_key, with_table
from .._section import check_section, spatial_coords
from .._validate import check_count, check_microns

if TYPE_CHECKING:
    import anndata as ad
    from spatialdata import SpatialData

GraphMethod = Literal["knn", "radius", "grid"]
GRAPH_METHODS: tuple[str, ...] = ("knn", "radius", "grid")


@doc_params
def spatial_graph(
    sdata: SpatialData,
    *,
    method: GraphMethod = "knn",
    n_neighs: int = 6,
    radius_um: float | None = None,
    table_key: str = TABLE_KEY,
    key_added: str = "spatial",
    copy: bool = False,
) -> SpatialData | None:
    """Spatial neighbour graph of the spots, with squidpy's builders and keys.

    The graph is built on the spot centres ``table.obsm["spatial"]`` (image pixels) by
    :func:`squidpy.gr.spatial_neighbors_knn`, :func:`squidpy.gr.spatial_neighbors_radius` or
    :func:`squidpy.gr.spatial_neighbors_grid`, so that squidpy's and scanpy's graph tools can use it.
    The radius is given in microns and converted to pixels with the microns per pixel of the section's
    image (see :func:`hist2st_tk.io.get_mpp`).

    Parameters
    ----------
    sdata
        The section.
    method
        ``"knn"``: each spot is connected to its ``n_neighs`` nearest spots.
        ``"radius"``: spots closer than ``radius_um`` are connected.
        ``"grid"``: for regular spot lattices; ``n_neighs=6`` for the Visium hexagonal grid,
        ``n_neighs=4`` for the square grid of legacy ST. Of the ``n_neighs`` nearest spots, only those
        closer than 1.3 x the median neighbour distance are kept, so spots at the tissue edge or next to
        a missing spot get fewer neighbours.
    n_neighs
        Number of neighbours for ``"knn"`` and ``"grid"``; must be smaller than the number of spots.
        Not used by ``"radius"``.
    radius_um
        Neighbourhood radius in microns; required by, and only allowed with, ``method="radius"``.
    {table_key}
    key_added
        Prefix of the keys written (squidpy's ``key_added``).
    {copy}

    Returns
    -------
    ``None``, or with ``copy=True`` the new SpatialData. Writes into the table:

    - ``obsp["{key_added}_connectivities"]``: binary adjacency, spots x spots (sparse, float32);
    - ``obsp["{key_added}_distances"]``: for ``"knn"`` and ``"radius"``, the Euclidean length of each
      edge in **image pixels** (multiply by ``mpp`` for microns); for ``"grid"``, squidpy's ring number
      (``1.0`` for direct grid neighbours), not a length;
    - ``uns["{key_added}_neighbors"]``: squidpy's ``{"connectivities_key", "distances_key", "params"}``;
      ``params`` holds squidpy's own parameters (``coord_type``, ``n_neighbors``, ``radius`` in pixels,
      ...) plus ``method``, ``n_neighs``, ``radius_um``, ``radius_px`` and ``mpp`` (microns per pixel
      of the section's image; ``None`` when unknown and not needed, for ``"knn"`` and ``"grid"``).

    Nothing is written when the call fails.

    Examples
    --------
    >>> import hist2st_tk as ht
    >>> sdata = ht.datasets.synthetic(n_spots=64, n_genes=12)
    >>> ht.pp.spatial_graph(sdata, method="radius", radius_um=120)
    >>> int(sdata["table"].obsp["spatial_connectivities"][9].sum())
    4
    """
    import anndata as ad
    import pandas as pd

    if method not in GRAPH_METHODS:
        msg = f"Unknown method {method!r}; use one of {list(GRAPH_METHODS)}."
        raise ValueError(msg)
    if method == "radius":
        if radius_um is None:
            msg = "`method='radius'` needs `radius_um`, the neighbourhood radius in microns."
            raise ValueError(msg)
        radius_um = _check_radius(radius_um)
    elif radius_um is not None:
        msg = f"`radius_um` is only used by `method='radius'`; got method={method!r}. Drop `radius_um`."
        raise ValueError(msg)

    table = check_section(sdata, table_key, obsm=[SPATIAL_KEY])
    coords = spatial_coords(table, table_key)
    if method != "radius":
        n_neighs = _check_n_neighs(n_neighs, table.n_obs)

    if method == "radius":
        mpp = get_mpp(sdata, section_image_key(sdata, table))[0]
    else:
        try:
            mpp = get_mpp(sdata, section_image_key(sdata, table))[0]
        except (KeyError, ValueError):
            mpp = None
    radius_px = radius_um / mpp if radius_um is not None else None

    # Build on a bare AnnData: squidpy writes there, and the table is touched only once all succeeded.
    work = ad.AnnData(obs=pd.DataFrame(index=table.obs_names.copy()), obsm={"spatial": coords})
    _build(work, method=method, n_neighs=n_neighs, radius_px=radius_px, key_added=key_added)
    conn_key, dist_key, uns_key = (
        f"{key_added}_connectivities",
        f"{key_added}_distances",
        f"{key_added}_neighbors",
    )
    uns = _copy.deepcopy(dict(work.uns[uns_key]))
    uns["params"] = {
        **uns.get("params", {}),
        "method": method,
        "n_neighs": n_neighs if method != "radius" else None,
        "radius_um": radius_um,
        "radius_px": radius_px,
        "mpp": mpp,
    }

    target = table.copy() if copy else table
    target.obsp[conn_key] = work.obsp[conn_key]
    target.obsp[dist_key] = work.obsp[dist_key]
    target.uns[uns_key] = uns
    n = table.n_obs
    log_added(f"{table_key}.obsp[{conn_key!r}]", (n, n))
    log_added(f"{table_key}.obsp[{dist_key!r}]", (n, n))
    log_added(f"{table_key}.uns[{uns_key!r}]")
    if not copy:
        return None
    return with_table(sdata, table_key, target)


def _check_radius(radius_um: float) -> float:
    return check_microns(radius_um, "radius_um")


def _check_n_neighs(n_neighs: int, n_spots: int) -> int:
    n_neighs = check_count(n_neighs, "n_neighs")
    if n_neighs >= n_spots:
        msg = f"`n_neighs={n_neighs}` must be smaller than the number of spots ({n_spots})."
        raise ValueError(msg)
    return int(n_neighs)


def _build(work: ad.AnnData, *, method: str, n_neighs: int, radius_px: float | None, key_added: str) -> None:
    with warnings.catch_warnings():
        # docrep, which squidpy uses for its docstrings, warns about its own keys at import: not the user's to fix
        warnings.filterwarnings("ignore", category=SyntaxWarning, module="docrep")
        import squidpy as sq

    # squidpy logs through spatialdata's logger (by its module name); this package logs the keys it adds itself.
    squidpy_logger = logging.getLogger("spatialdata._logging")
    level = squidpy_logger.level
    squidpy_logger.setLevel(max(level, logging.WARNING))
    try:
        _call_builder(sq, work, method=method, n_neighs=n_neighs, radius_px=radius_px, key_added=key_added)
    finally:
        squidpy_logger.setLevel(level)


def _call_builder(sq, work: ad.AnnData, *, method: str, n_neighs: int, radius_px, key_added: str) -> None:
    if method == "knn":
        sq.gr.spatial_neighbors_knn(work, spatial_key="spatial", n_neighs=n_neighs, key_added=key_added)
    elif method == "radius":
        sq.gr.spatial_neighbors_radius(work, spatial_key="spatial", radius=radius_px, key_added=key_added)
    else:
        sq.gr.spatial_neighbors_grid(work, spatial_key="spatial", n_neighs=n_neighs, key_added=key_added)
