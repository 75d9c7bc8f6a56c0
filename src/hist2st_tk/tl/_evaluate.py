"""Agreement of predicted and measured expression: per gene, per spot, and a summary."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._constants import TABLE_KEY
from .._docs import doc_params
from .._logging import log_added
from .._metrics import GENE_METRICS, score_expression
from .._sdata import predictions
from .._section import check_section
from ._tumor import tumor_score_auc

if TYPE_CHECKING:
    from spatialdata import SpatialData


@doc_params
def evaluate(
    sdata: SpatialData,
    *,
    key: str,
    genes: list[str] | None = None,
    label_key: str | None = None,
    table_key: str = TABLE_KEY,
) -> dict[str, float]:
    """Score predicted against measured expression (``X``) on the section's spots.

    Parameters
    ----------
    sdata
        A section with measured expression and predictions from :func:`predict_expression`.
    key
        Name of the predictions, e.g. ``"predicted_ridge"`` (``obsm[key]``).
    genes
        Score only these panel genes (e.g. a ``top50var`` subset); by default every predicted gene
        that the table measures.
    label_key
        Also score ``obs["tumor_score"]`` (see :func:`tumor_regions`) against this boolean ``obs`` column
        of labels: ``tumor_auc`` in the summary (see :func:`tumor_score_auc`).
    {table_key}

    Returns
    -------
    The summary: mean over genes of each per-gene metric (``pearson``, ``spearman``, ``mae``, ``mse``,
    ``r2``), ``spot_pearson`` (mean per-spot Pearson), ``n_genes``, ``n_spots`` and, with ``label_key``,
    ``tumor_auc``. Writes:

    - ``var["{key}_{metric}"]`` for each per-gene metric (NaN for genes not scored);
    - ``obs["{key}_spot_pearson"]``: Pearson across the scored genes of each spot;
    - ``uns[key]["metrics"]``: the summary.

    Genes constant in the predictions or the measurements have NaN correlations, left out of the means.
    Predicted genes that the section does not measure cannot be scored: they are left out, with a warning
    naming them (:func:`cross_validate` does the same). Nothing is written when the call fails.
    """
    table = check_section(sdata, table_key)
    _, predicted = predictions(table, key, table_key)
    per_gene, per_spot = score_expression(predicted, table, genes, table_key=table_key)
    scored = per_gene.index
    summary = {metric: float(np.nanmean(per_gene[metric])) for metric in GENE_METRICS}
    summary.update(spot_pearson=float(np.nanmean(per_spot)), n_genes=len(scored), n_spots=table.n_obs)
    if label_key is not None:
        summary["tumor_auc"] = tumor_score_auc(sdata, label_key=label_key, table_key=table_key)

    rows = table.var_names.get_indexer(scored)
    for metric in GENE_METRICS:
        column = np.full(table.n_vars, np.nan)
        column[rows] = per_gene[metric].to_numpy()
        table.var[f"{key}_{metric}"] = column
    table.obs[f"{key}_spot_pearson"] = per_spot
    table.uns.setdefault(key, {})["metrics"] = summary
    log_added(f"{table_key}.var[{key!r}_{{{','.join(GENE_METRICS)}}}]", (table.n_vars,))
    log_added(f"{table_key}.obs[{key + '_spot_pearson'!r}]", (table.n_obs,))
    log_added(f"{table_key}.uns[{key!r}]['metrics']")
    return summary
