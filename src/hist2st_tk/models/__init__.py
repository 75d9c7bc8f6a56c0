"""Predictors of expression from image features: one class per method, sharing one life cycle.

Every predictor fits on training sections, predicts a spots x genes DataFrame, and saves to / loads
from one directory (:class:`Predictor`). ``ht.tl.fit_predictor`` and ``ht.tl.predict_expression`` are
the usual entry points.
"""

from __future__ import annotations

from ._base import Predictor, available_methods, method_class
from ._deeponet import DeepONetPredictor
from ._default import DEFAULT_RECIPE, default_model, default_panel, fit_options, resolve
from ._hespotex import HESpotExPredictor
from ._hist2st import Hist2STPredictor
from ._histospace import HistoSpacePredictor
from ._image2gene import Image2GenePredictor
from ._multiscale import MultiScalePredictor
from ._ridge import RidgePredictor
from ._stnet import STNetPredictor
from ._torch import TorchPredictor

__all__ = [
    "DEFAULT_RECIPE",
    "DeepONetPredictor",
    "HESpotExPredictor",
    "Hist2STPredictor",
    "HistoSpacePredictor",
    "Image2GenePredictor",
    "MultiScalePredictor",
    "Predictor",
    "RidgePredictor",
    "STNetPredictor",
    "TorchPredictor",
    "available_methods",
    "default_model",
    "default_panel",
    "fit_options",
    "load",
    "method_class",
    "resolve",
]


def load(path) -> Predictor:
    """Load a predictor saved with :meth:`Predictor.save` (any method)."""
    return Predictor.load(path)
