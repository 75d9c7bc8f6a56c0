"""Helpers every plot shares: finding predictions, reading expression, saving and showing figures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._logging import format_ids

if TYPE_CHECKING:
    from collections.abc import Sequence

    import anndata as ad
    from matplotlib.figure import Figure

#: Backends that cannot show a window: ``show=None`` does not call ``plt.show()`` under them.
_NON_INTERACTIVE = frozenset({"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"})
_SAVE_DPI = 120

#: Docstring entries every plot shares; :func:`shared_docs` fills them in for ``{save_show}``.
SAVE_SHOW_DOC = """save
        Write the figure to this path (format from the suffix, PNG without one).
    show
        Show the figure; ``None``: unless matplotlib's backend cannot (e.g. ``Agg``)."""


def shared_docs(function):
    """Fill the parameter entries all plots share into ``function``'s docstring (placeholder ``{save_show}``)."""
    if function.__doc__:  # None under python -OO
        function.__doc__ = function.__doc__.replace("{save_show}", SAVE_SHOW_DOC)
    return function


def as_gene_list(genes: str | Sequence[str]) -> list[str]:
    """One gene or several as a non-empty list of names, each once."""
    names = [genes] if isinstance(genes, str) else list(dict.fromkeys(genes))
    if not names:
        msg = "Pass at least one gene."
        raise ValueError(msg)
    return names


def check_predicted(genes: list[str], predicted: pd.DataFrame, key: str) -> None:
    """Raise a ValueError naming the genes that ``predicted`` (``obsm[key]``) lacks."""
    missing = [g for g in genes if g not in predicted.columns]
    if missing:
        msg = (
            f"{len(missing)} genes were not predicted under {key!r}: {format_ids(missing)}; "
            f"predicted genes e.g. {format_ids(predicted.columns)}."
        )
        raise ValueError(msg)


def has_measured(table: ad.AnnData, key: str) -> bool:
    """False for an H&E-only slide, whose ``X`` holds the predictions ``key`` (no ``layers[key]`` then)."""
    return table.n_vars > 0 and not (key in table.uns and key not in table.layers)


def observed(
    table: ad.AnnData, genes: list[str], *, key: str, layer: str | None, table_key: str
) -> pd.DataFrame:
    """Measured expression of ``genes`` from ``X`` or ``layers[layer]``, spots x genes, index ``obs_names``."""
    if not has_measured(table, key):
        msg = (
            f"Table {table_key!r} has no measured expression: its X holds the predictions {key!r} "
            "(an H&E-only slide). Plot them alone with `ht.pl.spatial_expression(..., measured=False)`."
        )
        raise ValueError(msg)
    if layer is not None and layer not in table.layers:
        msg = f"No layer {layer!r} in table {table_key!r}; layers: {list(table.layers)}."
        raise KeyError(msg)
    missing = [g for g in genes if g not in table.var_names]
    if missing:
        msg = (
            f"{len(missing)} genes are predicted but not measured in table {table_key!r}: "
            f"{format_ids(missing)}. Plot them alone with `ht.pl.spatial_expression(..., measured=False)`."
        )
        raise ValueError(msg)
    subset = table[:, genes]
    values = subset.layers[layer] if layer is not None else subset.X
    values = np.asarray(values.toarray() if hasattr(values, "toarray") else values, dtype=np.float64)
    return pd.DataFrame(values, index=table.obs_names, columns=genes)


def check_save(save: str | Path | None) -> None:
    """Raise before any drawing when ``save`` has a suffix matplotlib cannot write."""
    if save is None:
        return
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(save)
    if not path.parent.is_dir():
        msg = f"Cannot save the figure to {str(path)!r}: the folder {str(path.parent)!r} does not exist."
        raise FileNotFoundError(msg)
    fmt = _format_of(path)
    supported = FigureCanvasBase.get_supported_filetypes()
    if fmt not in supported:
        msg = f"Cannot save a figure as {fmt!r} ({str(save)!r}); use one of {sorted(supported)}."
        raise ValueError(msg)


def finish(fig: Figure, *, save: str | Path | None, show: bool | None) -> Figure:
    """Save ``fig`` (PNG unless the suffix says otherwise) and show it when asked; returns it.

    ``show=None`` shows the figure unless matplotlib's backend cannot (``Agg`` and other file backends).
    The file is written under a temporary name and renamed into place, so it is complete or absent.
    """
    import matplotlib as mpl
    import matplotlib.pyplot as plt

    if save is not None:
        path = Path(save)
        staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fig.savefig(staging, format=_format_of(path), dpi=_SAVE_DPI, bbox_inches="tight")
            staging.replace(path)
        finally:
            staging.unlink(missing_ok=True)
    if show is None:
        show = mpl.get_backend().lower() not in _NON_INTERACTIVE
    if show:
        plt.show()
    return fig


def _format_of(path: Path) -> str:
    return path.suffix[1:].lower() or "png"
