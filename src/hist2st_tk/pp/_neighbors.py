"""Context from the spatial graph: the mean features of each spot's neighbours."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np

from .._constants import TABLE_KEY
from .._docs import doc_params
from .._logging import log_added
from .._section import check_section

if TYPE_CHECKING:
    from spatialdata import SpatialData


@doc_params
def aggregate_neighbors(
    sdata: SpatialData,
    *,
    use_rep: str,
    connectivity_key: str = "spatial_connectivities",
    table_key: str = TABLE_KEY,
    key_added: str | None = None,
) -> None:
    """Mean of the features of each spot's spatial neighbours (tissue context around the patch).

    Parameters
    ----------
    sdata
        The section, with features ``obsm[use_rep]`` and a spatial graph (:func:`spatial_graph`).
    use_rep
        ``obsm`` key of the features, e.g. ``"X_lite0"``.
    connectivity_key
        ``obsp`` key of the graph.
    {table_key}
    key_added
        ``obsm`` key written; by default ``f"{use_rep}_nbr"``.

    Returns
    -------
    ``None``. Writes ``obsm[key]`` (float32, same width as ``use_rep``: the unweighted mean over the
    neighbours; a spot without neighbours keeps its own features) and ``uns[key]["params"]``: the
    parameters of ``use_rep`` (encoder, patch size, so that predictors check them), plus
    ``aggregated_from``, ``connectivity_key``, the graph's ``params`` and ``n_isolated``.
    Nothing is written when the call fails.

    Examples
    --------
    >>> import hist2st_tk as ht
    >>> sdata = ht.datasets.synthetic(n_spots=16, n_genes=4)
    >>> ht.pp.image_features(sdata, encoder="fft", patch_um=56, progress=False)
    >>> ht.pp.spatial_graph(sdata, method="grid", n_neighs=4)
    >>> ht.pp.aggregate_neighbors(sdata, use_rep="X_fft")
    >>> sdata["table"].obsm["X_fft_nbr"].shape
    (16, 16)
    """
    table = check_section(sdata, table_key, obsm=[use_rep], obsp=[connectivity_key])
    features = np.asarray(table.obsm[use_rep], dtype=np.float32)
    graph = table.obsp[connectivity_key]
    degree = np.asarray(graph.sum(axis=1)).ravel()
    isolated = degree == 0
    context = np.asarray(graph @ features) / np.maximum(degree, 1)[:, None]
    context[isolated] = features[isolated]

    key = key_added or f"{use_rep}_nbr"
    graph_uns = table.uns.get(connectivity_key.replace("_connectivities", "_neighbors"), {})
    params = copy.deepcopy(dict(table.uns.get(use_rep, {}).get("params", {})))
    params.update(
        aggregated_from=use_rep,
        connectivity_key=connectivity_key,
        graph=copy.deepcopy(dict(graph_uns.get("params", {}))),
        n_isolated=int(isolated.sum()),
    )
    table.obsm[key] = context.astype(np.float32)
    table.uns[key] = {"params": params}
    log_added(f"{table_key}.obsm[{key!r}]", context.shape)
