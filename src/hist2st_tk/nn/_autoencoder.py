"""The HistoSPACE convolutional autoencoder and its frozen encoder as a feature extractor.

Training, model files and the encoder registry entry live in :mod:`hist2st_tk.encoders._autoencoder`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from numbers import Integral
from typing import Literal

import torch
from torch import nn

from .._validate import check_count


def _conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    """3x3 convolution (size preserving), batch norm, ReLU."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def _check_channels(channels: Sequence[int], in_channels: int) -> tuple[int, ...]:
    bad = isinstance(channels, str | bytes) or not isinstance(channels, Sequence) or len(channels) == 0
    if bad or any(isinstance(c, bool) or not isinstance(c, Integral) or c < 1 for c in channels):
        msg = f"`channels` must be a non-empty sequence of positive integers such as (32, 64, 128), got {channels!r}."
        raise ValueError(msg)
    check_count(in_channels, "in_channels")
    return tuple(int(c) for c in channels)


def check_tiles(x: torch.Tensor, *, in_channels: int, multiple: int) -> None:
    """Raise a clear error unless ``x`` is a float ``(N, in_channels, H, W)`` batch with H, W multiples of ``multiple``."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        msg = f"The autoencoder takes a batch of tiles shaped (N, {in_channels}, H, W), got {shape}."
        raise ValueError(msg)
    if x.shape[1] != in_channels:
        msg = (
            f"The autoencoder was built for {in_channels}-channel tiles, got {x.shape[1]} channels "
            f"(shape {tuple(x.shape)}); pass RGB tiles as (N, 3, H, W), channels first."
        )
        raise ValueError(msg)
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        msg = (
            f"Tile size {height} x {width} px is not a multiple of {multiple} (the encoder halves it "
            f"{int(math.log2(multiple))} times); crop or resize tiles to e.g. "
            f"{max(multiple, height // multiple * multiple)} x {max(multiple, width // multiple * multiple)} px."
        )
        raise ValueError(msg)
    if not x.is_floating_point():
        msg = f"The autoencoder takes float tiles in [0, 1], got dtype {x.dtype}; divide uint8 tiles by 255."
        raise TypeError(msg)


class ConvAutoencoder(nn.Module):
    """The HistoSPACE convolutional autoencoder.

    The encoder is one block per entry of ``channels`` (3x3 convolution, batch norm, ReLU, 2x2 max
    pooling), so a ``(N, 3, H, W)`` tile becomes a ``(N, channels[-1], H/8, W/8)`` map with the default
    three blocks. The decoder mirrors it (2x nearest upsampling, 3x3 convolution, batch norm, ReLU)
    and ends with a 3x3 convolution to ``in_channels`` and a sigmoid, so reconstructions lie in
    [0, 1] like the input. Train with MSE (:func:`hist2st_tk.encoders._autoencoder.train_autoencoder`).

    Parameters
    ----------
    channels
        Output channels of the encoder blocks; HistoSPACE uses ``(32, 64, 128)``.
    in_channels
        Channels of the input tiles (3 for RGB).

    Attributes
    ----------
    multiple
        H and W of the input must be multiples of this (``2 ** len(channels)``).
    input_px
        Edge of the square tiles it was trained on; set by ``train_autoencoder`` and
        ``load_autoencoder`` (:mod:`hist2st_tk.encoders._autoencoder`), ``None`` for an untrained model.

    Inputs
    ------
    Float tiles ``(N, in_channels, H, W)`` in [0, 1], H and W multiples of ``multiple``.

    Outputs
    -------
    The reconstruction, a tensor of the same shape in [0, 1] (not a dict: the public API of the
    autoencoder predates the networks of the predictors).
    """

    def __init__(self, *, channels: Sequence[int] = (32, 64, 128), in_channels: int = 3) -> None:
        super().__init__()
        self.channels = _check_channels(channels, in_channels)
        self.in_channels = int(in_channels)
        self.multiple = 2 ** len(self.channels)
        self.input_px: int | None = None

        widths = (self.in_channels, *self.channels)
        self.encoder = nn.Sequential(
            *(
                nn.Sequential(*_conv_block(a, b), nn.MaxPool2d(2))
                for a, b in zip(widths[:-1], widths[1:], strict=True)
            )
        )
        # Mirror: 128 -> 64 -> 32 -> 32 for the default, each after doubling the size back.
        back = (*self.channels[::-1], self.channels[0])
        self.decoder = nn.Sequential(
            *(
                nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), *_conv_block(a, b))
                for a, b in zip(back[:-1], back[1:], strict=True)
            ),
            nn.Conv2d(self.channels[0], self.in_channels, kernel_size=3, padding=1),
            nn.Sigmoid(),
        )

    def check(self, x: torch.Tensor) -> None:
        """Raise a clear error when ``x`` is not a batch this model can take."""
        check_tiles(x, in_channels=self.in_channels, multiple=self.multiple)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's feature map of tiles ``x``: ``(N, channels[-1], H / multiple, W / multiple)``."""
        self.check(x)
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of tiles ``x``, same shape, values in [0, 1]."""
        return self.decoder(self.encode(x))


class AutoencoderEncoder(nn.Module):
    """The frozen encoder of a trained :class:`ConvAutoencoder`, as a feature extractor.

    The encoder is copied, its parameters do not require gradients and it stays in eval mode (batch
    norm uses the statistics learned on the training tiles) even when a model holding this module is
    put in training mode. The autoencoder passed in is left untouched.

    Parameters
    ----------
    autoencoder
        A trained autoencoder.
    input_px
        Edge of the square tiles the autoencoder was trained on; defaults to ``autoencoder.input_px``.
    pooling
        ``"mean"``: global average pooling of the feature map, ``out_dim = channels[-1]`` (128);
        ``"mean+max"``: average and max pooling concatenated, ``out_dim = 2 * channels[-1]``.

    Attributes
    ----------
    out_dim
        Length of the feature vectors.
    map_channels
        Channels of :meth:`feature_map` (``channels[-1]``).
    input_px
        The training tile size; other sizes that are multiples of ``multiple`` work too.

    Inputs
    ------
    Float RGB tiles ``(N, 3, H, W)`` in [0, 1].

    Outputs
    -------
    Feature vectors ``(N, out_dim)`` (a tensor, as every encoder of the registry returns).
    """

    def __init__(
        self,
        autoencoder: ConvAutoencoder,
        *,
        input_px: int | None = None,
        pooling: Literal["mean", "mean+max"] = "mean",
    ) -> None:
        super().__init__()
        if not isinstance(autoencoder, ConvAutoencoder):
            msg = f"`autoencoder` must be a ConvAutoencoder, got {type(autoencoder).__name__}."
            raise TypeError(msg)
        if pooling not in ("mean", "mean+max"):
            msg = f"`pooling` must be 'mean' or 'mean+max', got {pooling!r}."
            raise ValueError(msg)
        input_px = autoencoder.input_px if input_px is None else input_px
        if input_px is None:
            msg = "The autoencoder has no training tile size; pass `input_px=` (the tile edge in pixels)."
            raise ValueError(msg)
        self.input_px = check_count(input_px, "input_px")
        self.in_channels = autoencoder.in_channels
        self.multiple = autoencoder.multiple
        self.pooling = pooling
        self.map_channels = autoencoder.channels[-1]
        self.out_dim = self.map_channels * (2 if pooling == "mean+max" else 1)
        self.encoder = _frozen_copy(autoencoder.encoder)
        self.eval()

    def train(self, mode: bool = True) -> AutoencoderEncoder:  # noqa: FBT001, FBT002 - nn.Module's signature
        """Set the mode of this module, but keep the frozen encoder in eval mode."""
        super().train(mode)
        self.encoder.eval()
        return self

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's spatial map of tiles ``x``: ``(N, map_channels, H / multiple, W / multiple)``."""
        check_tiles(x, in_channels=self.in_channels, multiple=self.multiple)
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature vectors ``(N, out_dim)`` of tiles ``x`` (float RGB in [0, 1])."""
        fmap = self.feature_map(x)
        pooled = fmap.mean(dim=(-2, -1))
        if self.pooling == "mean+max":
            pooled = torch.cat([pooled, fmap.amax(dim=(-2, -1))], dim=1)
        return pooled


def _frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` in eval mode whose parameters do not require gradients."""
    frozen = copy.deepcopy(module).eval()
    for parameter in frozen.parameters():
        parameter.requires_grad_(requires_grad=False)
    return frozen
