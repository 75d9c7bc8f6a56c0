"""Any timm model as an encoder, with weights from a local checkpoint or, when online, from its hub.

This is how users bring pathology foundation models (UNI, CONCH, H-optimus, Virchow ...): the
architecture comes from timm, the weights from the file the user downloaded under its licence.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ._registry import EncoderSpec

if TYPE_CHECKING:
    import torch
    from torch import nn


def timm_spec(model_name: str) -> EncoderSpec:
    """An :class:`EncoderSpec` for a timm architecture, from timm's own pretrained config."""
    import timm

    if not timm.is_model(model_name):
        msg = (
            f"timm has no model named {model_name!r}. Close names: {timm.list_models(f'*{model_name[:6]}*')[:10]}. "
            "For a hub model use its timm architecture name and pass the checkpoint with `weights=`."
        )
        raise ValueError(msg)
    cfg = timm.get_pretrained_cfg(model_name)
    cfg = cfg.to_dict() if cfg is not None else {}
    input_size = cfg.get("input_size", (3, 224, 224))
    return EncoderSpec(
        name=f"timm:{model_name}",
        input_px=int(input_size[-1]),
        mean=tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))),
        out_dim=None,
        licence=str(cfg.get("license", "see the checkpoint's licence")),
        weights="`weights=`: a local checkpoint (.safetensors, .pth, .bin) or 'hub' to download timm's own",
        build=build_timm,
    )


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: safetensors, or a torch file loaded with ``weights_only=True``."""
    import torch

    if not path.is_file():
        msg = f"The encoder weights file does not exist: {str(path)!r}."
        raise FileNotFoundError(msg)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the libraries raise many types for a truncated or foreign file
        msg = f"Cannot read encoder weights from {str(path)!r}: {err}"
        raise ValueError(msg) from None
    for wrapper in ("state_dict", "model"):  # common training-checkpoint layouts
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        msg = f"{str(path)!r} holds a {type(state).__name__}, not a dict of tensors (a state dict)."
        raise ValueError(msg)
    return state


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], *, source: str | Path) -> None:
    """Load ``state`` into ``model``, or raise naming the first keys that do not fit."""
    from .._files import state_mismatches

    problems = state_mismatches(model, state)
    if problems:
        msg = f"The weights in {str(source)!r} do not fit the architecture; " + "; ".join(problems) + "."
        raise ValueError(msg)
    model.load_state_dict(state, strict=True)


def _drop_classifier(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoints often carry a classification head the feature extractor does not have."""
    names = model.pretrained_cfg.get("classifier", "head")
    heads = (names,) if isinstance(names, str) else tuple(names)
    expected = model.state_dict()
    return {k: v for k, v in state.items() if k in expected or not any(k.startswith(h + ".") for h in heads)}


def build_timm(spec: EncoderSpec, weights: str | Path | None = None) -> nn.Module:
    """A timm model without classifier (``num_classes=0``), weights from a local file or timm's hub."""
    import timm

    model_name = spec.name.split(":", 1)[1]
    if weights is None:
        msg = (
            f"Encoder {spec.name!r} needs `weights=`: the path of a local checkpoint, or 'hub' to download "
            "timm's pretrained weights (online only). Random weights would give meaningless features."
        )
        raise ValueError(msg)
    if str(weights) == "hub":
        return timm.create_model(model_name, pretrained=True, num_classes=0).eval()
    model = timm.create_model(model_name, pretrained=False, num_classes=0)
    path = Path(weights)
    load_strict(model, _drop_classifier(model, read_checkpoint(path)), source=path)
    return model.eval()
