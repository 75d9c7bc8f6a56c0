"""The default predictor shipped inside the package (trained by ``scripts/train_default_model.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import anndata as ad

from .._constants import DEFAULT_MODEL_DIR
from .._markers import NON_TUMOR_MARKERS, TUMOR_MARKERS
from ._base import Predictor

#: The recipe of the default model, as plain data (chosen on the C2-C6 folds; see docs/robustness.md):
#: lite0 features of 56, 112 and 224 um patches rendered at ``working_mpp`` and their mean over the spots
#: within 300 um, centred per section; a ridge fitted on each training section as scanned and as a scanner
#: of each ``augment_mpp`` would have imaged it (:func:`hist2st_tk.pp.perturb`); the tumor head reads the
#: marker signature of the predictions. ``model.json`` of the shipped model records the same.
DEFAULT_RECIPE: dict = {
    "method": "ridge",
    "use_rep": ["X_lite0_56um", "X_lite0_112um", "X_lite0_224um", "X_lite0_112um_nbr", "X_lite0_224um_nbr"],
    "center": True,
    "working_mpp": 0.7,
    "augment_mpp": [4.0],
    "tumor_signature": {"positive": list(TUMOR_MARKERS), "negative": list(NON_TUMOR_MARKERS)},
}
#: Keys of a recipe that say how its training features are made, not how the predictor is fitted.
FEATURE_OPTIONS = ("working_mpp", "augment_mpp")


def fit_options(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """How a model of ``recipe`` is fitted: the keyword arguments of :func:`hist2st_tk.tl.fit_predictor`
    (and of :func:`hist2st_tk.tl.cross_validate`).

    A recipe also says how its training features are made: ``working_mpp`` (the resolution the patches
    are rendered at) and ``augment_mpp`` (each training section is also rendered as a scanner of these
    microns per pixel would have imaged it, :func:`hist2st_tk.pp.perturb`). Those are for whoever makes
    the training sections, not for the fit, and are left out.

    Parameters
    ----------
    recipe
        A recipe as plain data: its ``method`` and the other keyword arguments of ``fit_predictor``, with
        or without feature options; e.g. :data:`DEFAULT_RECIPE`.

    Returns
    -------
    A new dict: ``recipe`` without ``working_mpp`` and ``augment_mpp`` (its values are the recipe's own);
    ``recipe`` is not changed.

    Examples
    --------
    >>> import hist2st_tk as ht
    >>> options = ht.models.fit_options(ht.models.DEFAULT_RECIPE)
    >>> options["method"], options["center"], "augment_mpp" in options
    ('ridge', True, False)
    """
    if not isinstance(recipe, Mapping) or not isinstance(recipe.get("method"), str):
        msg = (
            "`recipe` must be a dict naming its `method` and the keyword arguments of ht.tl.fit_predictor, "
            f"such as ht.models.DEFAULT_RECIPE; got {recipe!r}."
        )
        raise TypeError(msg)
    return {key: value for key, value in recipe.items() if key not in FEATURE_OPTIONS}


def default_model() -> Predictor:
    """The default predictor: trained on the six public HER2ST sections (HER2-positive breast cancer H&E).

    Its model card, ``MODEL_CARD.md`` beside the weights (and in the docs), states the training data,
    the gene panel, the accuracy under the named protocols and the intended use. Compute the features
    it reads with :func:`hist2st_tk.pp.model_features`.

    Examples
    --------
    >>> import hist2st_tk as ht
    >>> model = ht.models.default_model()
    >>> model.method, len(model.genes), model.trained_on
    ('ridge', 258, ['B4', 'C2', 'C3', 'C4', 'C5', 'C6'])
    """
    return _load(DEFAULT_MODEL_DIR)


def default_panel(tables: Sequence[ad.AnnData], n_genes: int = 250) -> list[str]:
    """The default model's gene panel: the ``n_genes`` of highest mean expression over ``tables`` (the
    training sections' tables) and every tumor signature marker that all of them measure.

    Parameters
    ----------
    tables
        The tables of the training sections (log-normalised ``X``).
    n_genes
        Genes of highest mean expression.

    Returns
    -------
    Gene names, highest mean first, then the markers; nothing is written.
    """
    from ..pp._genes import gene_panel

    top = list(gene_panel(list(tables), n_genes=n_genes, flavor="top_mean"))
    measured = [g for g in (*TUMOR_MARKERS, *NON_TUMOR_MARKERS) if all(g in t.var_names for t in tables)]
    return [*top, *(g for g in measured if g not in top)]


def resolve(model: Predictor | str | Path | None) -> Predictor:
    """The fitted predictor that ``model`` names: itself, the one saved in the directory ``model``, or the
    default model for ``None``.

    Parameters
    ----------
    model
        A fitted predictor, the directory of a saved one (:meth:`Predictor.save`), or ``None``.

    Returns
    -------
    The predictor; nothing is written.

    Examples
    --------
    >>> import hist2st_tk as ht
    >>> ht.models.resolve(None).method
    'ridge'
    """
    if model is None:
        return default_model()
    if isinstance(model, (str, Path)):
        return Predictor.load(model)
    if not isinstance(model, Predictor) or not model.is_fitted:
        msg = (
            "`model` must be a fitted predictor (ht.tl.fit_predictor), the directory of a saved one, or None "
            f"for the default model; got {model!r}."
        )
        raise TypeError(msg)
    return model


@cache
def _load(path: Path) -> Predictor:
    if not (path / "model.json").is_file():
        msg = (
            f"The default model is missing from this installation ({str(path)!r}); train it with "
            "`python scripts/train_default_model.py` from the repository, or pass `model=`."
        )
        raise FileNotFoundError(msg)
    return Predictor.load(path)
