"""Access to the graph layers of PyTorch Geometric, imported only when a graph network is built."""

from __future__ import annotations

import warnings


def geometric_nn():
    """``torch_geometric.nn``, imported without its ``torch.jit.script`` deprecation notice (third-party
    noise on every first import; docs/installation.md)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*")
        import torch_geometric.nn as geometric

    return geometric
