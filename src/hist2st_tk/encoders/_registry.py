"""The encoder registry: what each image encoder expects, what it returns and where its weights come from."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

#: A builder turns ``(spec, weights)`` into a module mapping ``(N, 3, input_px, input_px)`` to ``(N, out_dim)``.
Builder = Callable[["EncoderSpec", "str | Path | None"], "nn.Module"]


@dataclass(frozen=True)
class EncoderSpec:
    """Everything the patch pipeline needs to know about an encoder.

    Attributes
    ----------
    name
        Registry name; features go to ``obsm["X_{name}"]``.
    input_px
        Edge of the square input patches, in pixels.
    mean, std
        Per-channel normalisation applied to RGB values scaled to [0, 1].
    out_dim
        Length of the feature vector (``None`` when it depends on the weights).
    licence
        Licence of the weights (or of the method, for weight-free encoders).
    weights
        Where the weights come from, in words.
    needs_weights
        Whether ``weights=`` must be passed (e.g. a self-trained autoencoder).
    build
        The builder; called as ``build(spec, weights)``.
    """

    name: str
    input_px: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    out_dim: int | None
    licence: str
    weights: str
    build: Builder = field(repr=False, compare=False)
    needs_weights: bool = False

    def describe(self) -> dict[str, Any]:
        """The metadata as plain types, for ``uns[...]["params"]`` and model cards."""
        return {
            "name": self.name,
            "input_px": self.input_px,
            "mean": list(self.mean),
            "std": list(self.std),
            "out_dim": self.out_dim,
            "licence": self.licence,
            "weights": self.weights,
        }


_REGISTRY: dict[str, EncoderSpec] = {}
_TIMM_PREFIX = "timm:"


def register_encoder(spec: EncoderSpec, *, overwrite: bool = False) -> None:
    """Make an encoder available by name to :func:`hist2st_tk.pp.image_features` and the predictors.

    Parameters
    ----------
    spec
        The encoder's metadata and builder.
    overwrite
        Replace an encoder registered under the same name.
    """
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", spec.name):
        msg = f"Encoder names must be letters, digits and '_' (they become obsm keys), got {spec.name!r}."
        raise ValueError(msg)
    if spec.name in _REGISTRY and not overwrite:
        msg = f"An encoder named {spec.name!r} is already registered; pass `overwrite=True` to replace it."
        raise ValueError(msg)
    _REGISTRY[spec.name] = spec


def available_encoders() -> list[str]:
    """Names of the registered encoders (any timm model is also accepted as ``"timm:<model name>"``)."""
    return sorted(_REGISTRY)


def get_encoder_spec(name: str) -> EncoderSpec:
    """The spec of a registered encoder, or of a timm model named ``"timm:<model name>"``.

    Parameters
    ----------
    name
        A registered name (see :func:`available_encoders`) or ``"timm:<model name>"``, e.g.
        ``"timm:vit_large_patch16_224"`` for UNI with its weights passed as a local file.
    """
    if not isinstance(name, str):
        msg = f"`encoder` must be a name (str), got {type(name).__name__}."
        raise TypeError(msg)
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith(_TIMM_PREFIX):
        from ._timm import timm_spec

        return timm_spec(name[len(_TIMM_PREFIX) :])
    msg = (
        f"Unknown encoder {name!r}. Registered encoders: {available_encoders()}; any timm model is "
        "accepted as 'timm:<model name>' with `weights=` a local checkpoint (or its hub name when online)."
    )
    raise ValueError(msg)


def feature_key(name: str) -> str:
    """``obsm`` key of an encoder's features: ``X_{name}``, with a timm name made key-safe."""
    if name.startswith(_TIMM_PREFIX):
        name = name[len(_TIMM_PREFIX) :]
    return "X_" + re.sub(r"[^A-Za-z0-9_]", "_", name)
