"""The default predictor shipped inside the package (trained by ``scripts/train_default_model.py``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from ._base import Predictor

#: Where the shipped model lives: ``model.json``, ``weights.safetensors`` and ``MODEL_CARD.md``.
DEFAULT_MODEL_DIR = Path(__file__).with_name("default_her2st")


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
