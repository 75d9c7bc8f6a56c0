"""Agreement of clusters (e.g. of predicted expression) with annotated regions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from .._constants import TABLE_KEY
from .._docs import doc_params
from .._logging import log_added, logger
from .._section import check_section

if TYPE_CHECKING:
    from spatialdata import SpatialData

UNS_KEY = "cluster_agreement"


@doc_params
def cluster_agreement(
    sdata: SpatialData,
    cluster_key: str,
    label_key: str,
    *,
    table_key: str = TABLE_KEY,
) -> dict[str, Any]:
    """Compare clusters of spots with annotated labels: ARI, NMI and their contingency table.

    Cluster predicted expression with scanpy first, e.g. ``sc.pp.neighbors(table,
    use_rep="predicted_ridge")`` then ``sc.tl.leiden(table, flavor="igraph")``. Spots missing a cluster
    or a label are left out.

    Parameters
    ----------
    sdata
        A section whose table has both ``obs`` columns.
    cluster_key
        ``obs`` column of clusters, e.g. ``"leiden"``.
    label_key
        ``obs`` column of annotations, e.g. HER2ST's ``"region_label"``.
    {table_key}

    Returns
    -------
    A dict with ``ari`` (adjusted Rand index), ``nmi`` (normalised mutual information, arithmetic mean),
    ``contingency`` (DataFrame: clusters x labels, spot counts), ``n_spots`` (spots compared) and
    ``n_majority`` (spots whose label is the most frequent label of their cluster; ``n_majority / n_spots``
    is the clusters' purity). Writes ``uns["cluster_agreement"]``: the same values and ``params``
    (``cluster_key``, ``label_key``).

    Examples
    --------
    >>> import hist2st_tk as ht
    >>> sdata = ht.datasets.synthetic(n_spots=16, n_genes=4)
    >>> obs = sdata["table"].obs
    >>> obs["cluster"] = obs["tumor"].astype(str)
    >>> ht.tl.cluster_agreement(sdata, "cluster", "tumor")["ari"]
    1.0
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    table = check_section(sdata, table_key, obs=[cluster_key, label_key])
    both = table.obs[[cluster_key, label_key]].dropna()
    if len(both) < 2:
        msg = (
            f"Fewer than two spots have both obs[{cluster_key!r}] and obs[{label_key!r}]; nothing to compare."
        )
        raise ValueError(msg)
    if len(both) < table.n_obs:
        logger.info(
            "cluster_agreement: %d spots without a cluster or label left out", table.n_obs - len(both)
        )
    clusters, labels = both[cluster_key].astype(str), both[label_key].astype(str)
    contingency = pd.crosstab(
        clusters.to_numpy(), labels.to_numpy(), rownames=["cluster"], colnames=["label"]
    )
    result = {
        "ari": float(adjusted_rand_score(labels, clusters)),
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
        "contingency": contingency,
        "n_spots": len(both),
        "n_majority": int(contingency.max(axis=1).sum()),
    }
    table.uns[UNS_KEY] = {**result, "params": {"cluster_key": cluster_key, "label_key": label_key}}
    log_added(f"{table_key}.uns[{UNS_KEY!r}]")
    return result
