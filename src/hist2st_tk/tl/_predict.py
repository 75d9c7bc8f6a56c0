"""Fit a predictor on training sections and write its predictions into a section's table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import TABLE_KEY
from .._logging import log_added
from .._sdata import get_table

if TYPE_CHECKING:
    from spatialdata import SpatialData

    from ..models import Predictor

GENES_KEY = "hist2st_genes"


def fit_predictor(
    sdatas: SpatialData | Sequence[SpatialData],
    *,
    method: str = "ridge",
    genes: int | Sequence[str] | None = 250,
    use_rep: str | Sequence[str] | None = None,
    seed: int = 0,
    table_key: str = TABLE_KEY,
    **hparams: Any,
):
    """Fit a predictor of expression from image features on training sections.

    Parameters
    ----------
    sdatas
        The training section(s), each with the features ``use_rep`` (see :func:`hist2st_tk.pp.image_features`).
    method
        A predictor method (:func:`hist2st_tk.models.available_methods`), e.g. ``"ridge"``.
    genes
        The gene panel: a number ``n`` for the ``n`` genes of highest mean log expression over the training
        sections (``top_mean`` of :func:`hist2st_tk.pp.select_genes`), a list of gene names, or ``None`` for
        the genes marked in ``var["hist2st_genes"]`` by :func:`hist2st_tk.pp.select_genes`.
    use_rep
        ``obsm`` key(s) of the features; several keys are concatenated. ``None``: the method's default
        (``"X_lite0"`` for feature-based methods; ``stnet`` reads the image and takes none).
    seed
        Seed of every random choice of the fit.
    table_key
        Name of the table of spots.
    **hparams
        Hyper-parameters of the method (see its class in :mod:`hist2st_tk.models`).

    Returns
    -------
    The fitted predictor; writes nothing into the sections. Save it with ``model.save(path)``.

    Examples
    --------
    >>> import hist2st_tk as ht
    >>> train = ht.datasets.synthetic(n_spots=64, n_genes=12, seed=0)
    >>> ht.pp.image_features(train, encoder="handcrafted", patch_um=56, progress=False)
    >>> model = ht.tl.fit_predictor(train, method="ridge", genes=5, use_rep="X_handcrafted")
    >>> list(model.genes)[:2]
    ['gene_011', 'gene_002']
    """
    from spatialdata import SpatialData

    from ..models import method_class
    from ..pp._genes import gene_panel

    sections = [sdatas] if isinstance(sdatas, SpatialData) else list(sdatas)
    tables = [get_table(sd, table_key) for sd in sections]
    model = method_class(method)(seed=seed, **({} if use_rep is None else {"use_rep": use_rep}), **hparams)
    if genes is None:
        panel = _marked_panel(tables, table_key)
    elif isinstance(genes, (int, np.integer)) and not isinstance(genes, bool):
        panel = gene_panel(tables, n_genes=int(genes), flavor="top_mean", table_key=table_key)
    else:
        panel = gene_panel(tables, flavor="list", genes=genes, table_key=table_key)
    return model.fit(sections, genes=panel, table_key=table_key)


def _marked_panel(tables, table_key: str) -> pd.Index:
    if GENES_KEY not in tables[0].var:
        msg = (
            f"`genes=None` uses var[{GENES_KEY!r}], which table {table_key!r} lacks; run "
            "`ht.pp.select_genes(sdatas, ...)` first or pass `genes=` (a number or a list of names)."
        )
        raise KeyError(msg)
    panel = tables[0].var_names[tables[0].var[GENES_KEY].to_numpy(dtype=bool)]
    return pd.Index(panel, dtype=object)


def predict_expression(
    sdata: SpatialData,
    model: Predictor | str | Path | None = None,
    *,
    key_added: str | None = None,
    table_key: str = TABLE_KEY,
) -> pd.DataFrame:
    """Predict the expression of the model's gene panel and write it into the section's table.

    Parameters
    ----------
    sdata
        The section, with the features the model reads (the same encoder and patch size it was
        trained on; see :func:`hist2st_tk.pp.image_features`).
    model
        A fitted predictor, or the directory of a saved one. ``None``: the default model shipped with
        the package (:func:`hist2st_tk.models.default_model`, trained on the six HER2ST sections; see its
        model card); :func:`hist2st_tk.pp.model_features` computes the features it reads.
    key_added
        Name of the predictions; by default ``"predicted_{method}"``.
    table_key
        Name of the table of spots.

    Returns
    -------
    The predictions, spots x panel genes (log-normalised like ``X``). Writes into the table:

    - ``obsm[key]``: the predictions as a DataFrame (index = ``obs_names``, columns = panel genes);
    - ``layers[key]``: predictions in the full ``var`` size, NaN for genes outside the panel, when the
      table has measured genes; panel genes missing from ``var`` are in ``obsm`` only;
    - for a table without genes (an H&E-only slide), ``var`` becomes the panel and ``X`` the predictions;
    - ``uns[key]["params"]``: ``method``, ``genes`` (number), ``trained_on``, ``use_rep`` and ``inputs``;
    - ``obs[...]``: per-spot outputs of methods that predict more than expression, e.g.
      ``obs["tumor_score"]`` (probability of tumor) of ``hist_multiscale``.

    Nothing is written when the call fails.
    """
    from ..models import Predictor, default_model

    if model is None:
        model = default_model()
    if isinstance(model, (str, Path)):
        model = Predictor.load(model)
    key = key_added or f"predicted_{model.method}"
    table = get_table(sdata, table_key)
    predicted, annotations = model.predict_all(sdata, table_key=table_key)
    params = {
        "method": model.method,
        "genes": len(model.genes),
        "trained_on": list(model.trained_on),
        "use_rep": list(model.use_rep),
        "inputs": model.inputs,
    }
    if table.n_vars == 0:
        table = sdata.tables[table_key] = _gene_less_table(table, predicted, key, params)
        log_added(f"{table_key}.X (predictions of {key!r})", predicted.shape)
        _write_annotations(table, annotations, table_key)
        return predicted
    layer = np.full(table.shape, np.nan, dtype=np.float32)
    columns = table.var_names.get_indexer(predicted.columns)
    found = columns >= 0
    layer[:, columns[found]] = predicted.to_numpy()[:, found]
    table.obsm[key] = predicted
    table.layers[key] = layer
    table.uns[key] = {"params": params}
    log_added(f"{table_key}.obsm[{key!r}]", predicted.shape)
    log_added(f"{table_key}.layers[{key!r}]", layer.shape)
    _write_annotations(table, annotations, table_key)
    return predicted


def _write_annotations(table, annotations: pd.DataFrame, table_key: str) -> None:
    """Per-spot outputs besides expression (e.g. ``tumor_score``) go to ``obs``."""
    for column in annotations.columns:
        table.obs[column] = annotations[column].to_numpy()
        log_added(f"{table_key}.obs[{column!r}]", (table.n_obs,))


def _gene_less_table(table, predicted: pd.DataFrame, key: str, params: dict):
    """The table of an H&E-only slide with the panel as ``var`` and the predictions as ``X``."""
    import anndata as ad

    new = ad.AnnData(
        X=predicted.to_numpy(),
        obs=table.obs.copy(),
        var=pd.DataFrame(index=predicted.columns.copy()),
        obsm=dict(table.obsm),
        obsp=dict(table.obsp),
        uns={**dict(table.uns), key: {"params": params}},
    )
    new.obsm[key] = predicted
    return new
