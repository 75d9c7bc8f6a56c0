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


@cache
def _load(path: Path) -> Predictor:
    if not (path / "model.json").is_file():
        msg = (
            f"The default model is missing from this installation ({str(path)!r}); train it with "
            "`python scripts/train_default_model.py` from the repository, or pass `model=`."
        )
        raise FileNotFoundError(msg)
    return Predictor.load(path)
