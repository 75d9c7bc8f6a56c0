"""Agreement of predicted and measured expression: per gene, per spot, and a summary."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._constants import TABLE_KEY
from .._logging import log_added
from .._metrics import GENE_METRICS, gene_scores, spot_pearson
from .._sdata import get_table, predictions

if TYPE_CHECKING:
    from spatialdata import SpatialData

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
    table_key
        Name of the table of spots.

    Returns
    -------
    The summary: mean over genes of each per-gene metric (``pearson``, ``spearman``, ``mae``, ``mse``,
    ``r2``), ``spot_pearson`` (mean per-spot Pearson), ``n_genes``, ``n_spots`` and, with ``label_key``,
    ``tumor_auc``. Writes:

    - ``var["{key}_{metric}"]`` for each per-gene metric (NaN for genes not scored);
    - ``obs["{key}_spot_pearson"]``: Pearson across the scored genes of each spot;
    - ``uns[key]["metrics"]``: the summary.

    Genes constant in the predictions or the measurements have NaN correlations, left out of the means.
    Nothing is written when the call fails.
    """
    table = get_table(sdata, table_key)
    _, predicted = predictions(table, key, table_key)
    scored = pd.Index(predicted.columns if genes is None else genes)
    missing = scored.difference(predicted.columns)
    if len(missing):
        msg = f"{len(missing)} genes were not predicted under {key!r}: {list(missing[:5])}."
        raise KeyError(msg)
    scored = scored.intersection(table.var_names, sort=False)
    if scored.empty:
        msg = f"None of the genes predicted under {key!r} is measured in table {table_key!r}."
        raise ValueError(msg)
    observed = table[:, scored].X
    observed = np.asarray(observed.toarray() if hasattr(observed, "toarray") else observed, dtype=np.float64)
    values = predicted[scored].to_numpy(dtype=np.float64)

    per_gene = gene_scores(values, observed)
    per_spot = spot_pearson(values, observed)
    summary = {metric: float(np.nanmean(per_gene[metric])) for metric in GENE_METRICS}
    summary.update(spot_pearson=float(np.nanmean(per_spot)), n_genes=len(scored), n_spots=table.n_obs)
    if label_key is not None:
        from ._regions import tumor_score_auc  # imported here: _regions imports this module

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
