"""The networks of the predictors and encoders, as plain ``torch.nn.Module`` classes (scvi's ``module``
role), and the Lightning plan that trains them (scvi's ``train`` role, in :mod:`hist2st_tk.nn._training`).

Each network takes its sizes and hyper-parameters explicitly and knows nothing of SpatialData, files or
training: the predictors of :mod:`hist2st_tk.models` and the autoencoder of :mod:`hist2st_tk.encoders`
build them and train them with :class:`~hist2st_tk.nn._training.TrainingPlan`. The plan lives here, in
the encoders' layer, so that both can use it (docs/architecture.md). The forward of a predictor's
network returns a dict of tensors whose ``"expression"`` (standardised) is what the predictor
un-standardises (Image2Gene's returns an ``"embedding"``).

Importing this package imports torch (``import hist2st_tk`` does not import it); lightning is imported
with :mod:`~hist2st_tk.nn._training`, when a training starts, and PyTorch Geometric when a graph network
is built.
"""

from __future__ import annotations

from ._autoencoder import AutoencoderEncoder, ConvAutoencoder
from ._deeponet import DeepONet
from ._hespotex import HESpotExNet
from ._hist2st import Hist2STNet
from ._histospace import HistoSpaceNet
from ._image2gene import Image2GeneNet
from ._multiscale import MultiScaleNet
from ._stnet import STNet

__all__ = [
    "AutoencoderEncoder",
    "ConvAutoencoder",
    "DeepONet",
    "HESpotExNet",
    "Hist2STNet",
    "HistoSpaceNet",
    "Image2GeneNet",
    "MultiScaleNet",
    "STNet",
]
