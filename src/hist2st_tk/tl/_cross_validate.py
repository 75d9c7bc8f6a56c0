"""Cross-validation by section or patient under the named protocols of docs/protocols.md."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import TABLE_KEY
from .._docs import doc_params
from .._logging import logger
from .._metrics import GENE_METRICS, score_expression, tumor_auc
from .._protocols import PANELS, protocol_folds
from .._sdata import named_sections, patients
from .._section import check_section

if TYPE_CHECKING:
    from spatialdata import SpatialData


@dataclass
class CrossValidation:
    """Results of :func:`cross_validate`.

    Attributes
    ----------
    scores
        Tidy per-gene scores: one row per (``fold``, ``held_out``, ``panel``, ``gene``, ``metric``) with its ``value``.
    folds
        One row per (``fold``, ``held_out``, ``panel``): mean of each per-gene metric, ``spot_pearson``,
        ``n_genes`` (the panel genes the held-out section measures; the others cannot be scored and are
        left out, with a warning, as in :func:`evaluate`), ``tumor_auc`` (AUC of a predicted
        ``tumor_score`` against ``obs[label_key]`` where both exist, else NaN), ``train_seconds``,
        ``predict_seconds``, ``n_parameters``.
    predictions
        Every held-out prediction: held-out section -> spots x genes DataFrame (log-normalised), per fold.
    annotations
        Per-spot outputs besides expression (e.g. ``tumor_score``), in the same layout as ``predictions``.
    protocol
        The protocol's name (or ``"explicit"``).
    """

    scores: pd.DataFrame
    folds: pd.DataFrame
    predictions: dict[str, dict[str, pd.DataFrame]] = field(repr=False)
    annotations: dict[str, dict[str, pd.DataFrame]] = field(repr=False)
    protocol: str

    def summary(self) -> pd.DataFrame:
        """The protocol's headline numbers: per panel, the mean over folds of each fold's metrics.

        A fold with several held-out sections (e.g. ``B4->C``) counts once, with the mean over its sections.
        """
        numeric = self.folds.drop(columns=["held_out"])
        per_fold = numeric.groupby(["fold", "panel"], sort=False).mean()
        return per_fold.groupby(level="panel", sort=False).mean()


def _fold_panels(tables, panels: Mapping[str, tuple[str, int]], table_key: str) -> dict[str, pd.Index]:
    from ..pp._genes import gene_panel

    return {
        name: gene_panel(tables, flavor=flavor, n_genes=n, table_key=table_key)
        for name, (flavor, n) in panels.items()
    }


@doc_params
def cross_validate(
    sdatas: Mapping[str, SpatialData] | Sequence[SpatialData],
    *,
    method: str = "ridge",
    protocol: str | Sequence = "leave-one-section-out",
    panels: Mapping[str, tuple[str, int]] | None = None,
    use_rep: str | Sequence[str] | None = None,
    seed: int = 0,
    label_key: str = "tumor",
    table_key: str = TABLE_KEY,
    **hparams: Any,
) -> CrossValidation:
    """Fit and score a method fold by fold, never training on a held-out section.

    In each fold the gene panels are chosen on the training sections only, one model is fitted on the
    union of the panels' genes, and every held-out section is scored on each panel separately.

    Parameters
    ----------
    sdatas
        The sections with features ``use_rep``: a dict name -> SpatialData, or a list (named by ``obs["sample"]``).
    method
        A predictor method (:func:`hist2st_tk.models.available_methods`).
    protocol
        ``"her2st6-loso"`` (B4, C2-C6, leave one section out), ``"her2st-cross-patient"`` (C2-C6 -> B4 and
        B4 -> C2-C6), ``"leave-one-section-out"``, ``"leave-one-patient-out"`` (by ``obs["patient"]``), or
        explicit folds: a list of ``(training sections, held-out sections)`` or ``(name, training, held-out)``.
    panels
        Gene panels, name -> (``select_genes`` flavor, number of genes); by default the protocol panels
        ``top250mean`` (``("top_mean", 250)``) and ``top50var`` (``("top_var", 50)``).
    use_rep
        ``obsm`` key(s) of the features; ``None``: the method's default (``"X_lite0"``; none for ``stnet``).
    seed
        Seed of every fit.
    label_key
        Boolean ``obs`` column that a predicted ``tumor_score`` is scored against.
    {table_key}
    **hparams
        Hyper-parameters of the method.

    Returns
    -------
    A :class:`CrossValidation` with tidy per-gene scores, fold-level metrics, timings and every held-out
    prediction; writes nothing into the sections.
    """
    from ..models import method_class

    sections = named_sections(sdatas, table_key)
    folds = protocol_folds(protocol, patients(sections, table_key))
    panels = dict(PANELS if panels is None else panels)
    method_class(method)  # an unknown method fails before any fit
    score_rows, fold_rows, predictions, annotations = [], [], {}, {}
    for name, train, test in folds:
        tables = [check_section(sections[s], table_key) for s in train]
        fold_panels = _fold_panels(tables, panels, table_key)
        genes = pd.Index(dict.fromkeys(g for panel in fold_panels.values() for g in panel))
        start = time.perf_counter()
        model = method_class(method)(
            seed=seed, **({} if use_rep is None else {"use_rep": use_rep}), **hparams
        )
        model.fit([sections[s] for s in train], genes=genes, table_key=table_key)
        train_seconds = time.perf_counter() - start
        predictions[name], annotations[name] = {}, {}
        for held_out in test:
            start = time.perf_counter()
            predicted, extra = model.predict_all(sections[held_out], table_key=table_key)
            predict_seconds = time.perf_counter() - start
            predictions[name][held_out], annotations[name][held_out] = predicted, extra
            table = check_section(sections[held_out], table_key)
            auc = tumor_auc(table.obs, extra, label_key)
            for panel, panel_genes in fold_panels.items():
                per_gene, per_spot = score_expression(predicted, table, panel_genes, table_key=table_key)
                long = per_gene.rename_axis("gene").reset_index().melt(id_vars="gene", var_name="metric")
                score_rows.append(long.assign(fold=name, held_out=held_out, panel=panel))
                fold_rows.append(
                    {
                        "fold": name,
                        "held_out": held_out,
                        "panel": panel,
                        **{m: float(np.nanmean(per_gene[m])) for m in GENE_METRICS},
                        "spot_pearson": float(np.nanmean(per_spot)),
                        "n_genes": len(per_gene),
                        "tumor_auc": auc,
                        "train_seconds": train_seconds,
                        "predict_seconds": predict_seconds,
                        "n_parameters": model.n_parameters,
                    }
                )
        logger.info("fold %s: trained on %s in %.1f s", name, ", ".join(train), train_seconds)
    scores = pd.concat(score_rows, ignore_index=True)[
        ["fold", "held_out", "panel", "gene", "metric", "value"]
    ]
    return CrossValidation(
        scores=scores,
        folds=pd.DataFrame(fold_rows),
        predictions=predictions,
        annotations=annotations,
        protocol=protocol if isinstance(protocol, str) else "explicit",
    )
