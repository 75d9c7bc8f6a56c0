"""Fit a predictor on training sections and write its predictions into a section's table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import GENES_KEY, TABLE_KEY, predicted_key
from .._docs import doc_params
from .._logging import log_added, logger
from .._sdata import section_list, written_by_prediction
from .._section import check_section
from ..models._novelty import FeatureNovelty

if TYPE_CHECKING:
    from spatialdata import SpatialData

    from ..models import Predictor

#: Name of the novelty annotation of a predictor (written as ``obs[f"{key}_novelty"]``).
NOVELTY = "novelty"
#: Warn when more than this fraction of a section's spots are out of distribution.
OOD_WARN_FRACTION = 0.5
#: A scale within this factor of the model's range is inside it (scales derived from spot grids vary).
MPP_TOLERANCE = 1.05
#: An image whose every channel varies less than this (grey levels, standard deviation) is blank.
BLANK_STD = 2.0
#: The blank check reads the coarsest level of the image, subsampled to about this many pixels across.
BLANK_CHECK_PX = 1024


@doc_params
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
    {table_key}
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

    from ..models import method_class
    from ..pp._genes import gene_panel

    sections = section_list(sdatas, "sdatas")
    tables = [check_section(sd, table_key) for sd in sections]
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


@doc_params
def predict_expression(
    sdata: SpatialData,
    model: Predictor | str | Path | None = None,
    *,
    key_added: str | None = None,
    compute_features: bool = True,
    progress: bool = True,
    table_key: str = TABLE_KEY,
    **feature_options: Any,
) -> pd.DataFrame:
    """Predict the expression of the model's gene panel and write it into the section's table.

    The one call from an image to expression: the image features the model reads and the section
    lacks are computed first (:func:`hist2st_tk.pp.model_features`), after checking that the image is
    not blank and that its scale lies in the range the model was validated for (a warning otherwise).

    Parameters
    ----------
    sdata
        The section; its image needs a known microns per pixel (see :func:`hist2st_tk.io.get_mpp`).
    model
        A fitted predictor, or the directory of a saved one. ``None``: the default model shipped with
        the package (:func:`hist2st_tk.models.default_model`, trained on the six HER2ST sections; see its
        model card).
    {predictions_key_added}
    compute_features
        Check the image (:func:`warn_if_unsuitable`) and compute the features the model reads that the
        table lacks (with a progress bar). ``False`` requires them to be there already (an error names
        the call that makes them) and leaves the image unchecked.
    progress
        Show a progress bar while features are computed.
    {table_key}
    **feature_options
        Passed to :func:`hist2st_tk.pp.model_features` (``batch_size``, ``num_workers``, ``device``).

    Returns
    -------
    The predictions, spots x panel genes (log-normalised like ``X``). Writes into the table:

    - ``obsm[key]``: the predictions as a DataFrame (index = ``obs_names``, columns = panel genes);
    - ``layers[key]``: predictions in the full ``var`` size, NaN for genes outside the panel, when the
      table has measured genes; panel genes missing from ``var`` are in ``obsm`` only;
    - for a table without genes (an H&E-only slide), ``var`` becomes the panel and ``X`` the predictions;
    - ``uns[key]["params"]``: ``method``, ``genes`` (number), ``trained_on``, ``use_rep`` and ``inputs``;
    - ``obs[...]``: per-spot outputs of methods that predict more than expression, e.g.
      ``obs["tumor_score"]`` (probability of tumor) of ``hist_multiscale``;
    - ``obs[f"{key}_novelty"]``: how unlike the training spots each spot's image features are (0-1,
      calibrated on held-out training sections; above ``0.99`` is out of distribution), summarised in
      ``uns[key]["novelty"]``, for models that record their training distribution;
    - with ``compute_features``, what :func:`hist2st_tk.pp.model_features` writes for missing features.

    Nothing is written when the call fails.
    """
    from ..models import resolve
    from ..pp import model_features
    from ..pp._model_features import TableSnapshot

    model = resolve(model)
    key = key_added or predicted_key(model.method)
    table = check_section(sdata, table_key)
    _check_key_added(table, key, table_key)
    if compute_features:  # before any feature is computed (a caller that made them checked already)
        warn_if_unsuitable(sdata, model, table_key=table_key)
    snapshot = TableSnapshot(sdata, table_key)
    try:
        if compute_features:
            model_features(sdata, model, progress=progress, table_key=table_key, **feature_options)
        predicted, annotations = model.predict_all(sdata, table_key=table_key)
    except BaseException:
        snapshot.restore()
        raise
    table = check_section(sdata, table_key)
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
        _write_annotations(table, annotations, key, table_key)
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
    _write_annotations(table, annotations, key, table_key)
    return predicted


def _check_key_added(table, key: str, table_key: str) -> None:
    """Refuse a predictions key that names data this function did not write (counts, coordinates, features)."""
    taken = [f"{where}[{key!r}]" for where in ("obsm", "layers") if key in getattr(table, where)]
    if taken and not written_by_prediction(table, key):
        msg = (
            f"`key_added={key!r}` would overwrite {' and '.join(taken)} of table {table_key!r}, which "
            "predict_expression did not write; choose another name (default: 'predicted_{method}')."
        )
        raise ValueError(msg)


def _write_annotations(table, annotations: pd.DataFrame, key: str, table_key: str) -> None:
    """Per-spot outputs besides expression (e.g. ``tumor_score``) go to ``obs``; the novelty of the
    spots to ``obs[f"{key}_novelty"]``, summarised in ``uns[key]["novelty"]``."""
    for column in annotations.columns:
        name = f"{key}_{NOVELTY}" if column == NOVELTY else column
        table.obs[name] = annotations[column].to_numpy()
        log_added(f"{table_key}.obs[{name!r}]", (table.n_obs,))
    if NOVELTY in annotations:
        summary = FeatureNovelty.summary(annotations[NOVELTY].to_numpy())
        table.uns[key]["novelty"] = summary
        _warn_novel(summary, key)


def _warn_novel(summary: dict[str, float], key: str) -> None:
    fraction = summary["fraction_out_of_distribution"]
    if fraction > OOD_WARN_FRACTION:
        logger.warning(
            "%.0f%% of the spots look unlike anything the model was trained on (novelty above %.2f; "
            "median %.2f): its predictions %r are not to be trusted there. See obs['%s_novelty'] "
            "(ht.pl.spatial(sdata, '%s_novelty')).",
            100 * fraction,
            summary["threshold"],
            summary["median"],
            key,
            key,
            key,
        )


def warn_if_unsuitable(sdata: SpatialData, model: Predictor, *, table_key: str = TABLE_KEY) -> list[str]:
    """Warn when the section's image is blank or its scale lies outside the range the model is meant
    for (:meth:`~hist2st_tk.models.Predictor.mpp_range`, with 5% tolerance); returns the warnings.

    Reads only the coarsest level of the image (subsampled). A section without an image is not checked.
    """
    from .._scale import get_mpp
    from .._sdata import image_levels, section_image_key

    image_key = section_image_key(sdata, check_section(sdata, table_key))
    if image_key is None:
        return []
    messages = []
    level = image_levels(sdata.images[image_key])[-1]
    step = max(1, max(level.shape[1:]) // BLANK_CHECK_PX)
    pixels = np.asarray(level.data[:, ::step, ::step]).reshape(level.shape[0], -1).astype(np.float64)
    if pixels.size and float(pixels.std(axis=1).max()) < BLANK_STD:
        colour = pixels.mean(axis=1).round().tolist()
        messages.append(
            f"The image {image_key!r} is blank (every pixel about {colour}): predictions from it mean "
            "nothing. Is it a placeholder (e.g. an empty hires image)?"
        )
    allowed = model.mpp_range()
    try:
        mpp = get_mpp(sdata, image_key)[0]
    except KeyError:
        mpp = None
    if (
        allowed is not None
        and mpp is not None
        and not allowed[0] / MPP_TOLERANCE <= mpp <= allowed[1] * MPP_TOLERANCE
    ):
        messages.append(
            f"The image {image_key!r} has {mpp:.3g} um/px, outside the range the {model.method!r} model is "
            f"meant for ({allowed[0]:.3g}-{allowed[1]:.3g} um/px): expect less accurate predictions."
        )
    for message in messages:
        logger.warning(message)
    return messages


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
