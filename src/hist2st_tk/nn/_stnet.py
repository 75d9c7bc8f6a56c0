"""The ST-Net network: an image encoder fine-tuned end to end, with a linear head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class STNet(nn.Module):
    """An image encoder (the backbone) and a linear head to the genes; normalises the patches itself.

    Parameters
    ----------
    backbone
        Maps normalised ``(N, 3, input_px, input_px)`` patches to ``(N, D)`` features.
    n_genes
        Number of genes predicted.
    mean, std
        Per-channel normalisation the backbone expects (saved as the buffers ``mean`` and ``std``).
    input_px
        Edge of the backbone's input, used once to measure ``D``.

    Inputs
    ------
    RGB patches ``(N, 3, H, W)``, uint8 or float in [0, 1].

    Outputs
    -------
    ``{"expression": (N, n_genes)}``, standardised expression.
    """

    def __init__(
        self, backbone: nn.Module, n_genes: int, *, mean: Sequence[float], std: Sequence[float], input_px: int
    ):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        with torch.no_grad():
            width = backbone(torch.zeros(1, 3, input_px, input_px)).shape[1]
        self.head = nn.Linear(width, n_genes)

    def forward(self, x):
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x
        return {"expression": self.head(self.backbone((x - self.mean) / self.std))}
