"""Helpers every plot shares: reading expression, words and units, palettes, scale bars, saving figures."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._constants import PREDICTED_PREFIX, TUMOR_SCORE_KEY
from .._logging import format_ids

if TYPE_CHECKING:
    from collections.abc import Sequence

    import anndata as ad
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Backends that cannot show a window: ``show=None`` does not call ``plt.show()`` under them.
_NON_INTERACTIVE = frozenset({"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"})
_SAVE_DPI = 120

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


# -- words, units and colours ---------------------------------------------------------------------

#: What ``X`` and predictions hold: scanpy's ``normalize_total`` to 10,000 counts per spot, then ``log1p``.
EXPRESSION_UNIT = "log1p normalised counts"
#: Colour-bar label of a tumor score (a predictor's or a tumor classifier's probability of tumor).
TUMOR_UNIT = "tumor probability"
#: Colour-bar label of the tumor score of :func:`~hist2st_tk.tl.tumor_regions` without a classifier: the
#: logistic function of a marker signature (0.5: the section's average spot), not a calibrated probability.
SIGNATURE_UNIT = "tumor marker signature (logistic)"
_TUMOR_REGIONS = "tumor_regions"  # the uns entry of tl.tumor_regions
#: Colour-bar label of ``obs["{key}_novelty"]``: the quantile of the spot's distance to the training
#: spots among the distances of held-out training sections.
NOVELTY_UNIT = "novelty (quantile of training sections)"
Z_UNIT = "z-score"
#: Suffixes of ``obs`` columns with a known meaning (``ht.tl`` writes ``{key}_novelty`` and
#: ``{key}_spot_pearson``; the demo ``{gene}_measured_z_score``): title (``None``: the key in words,
#: with the unit in brackets) and colour-bar label.
_SUFFIXES = {
    "_novelty": ("novelty", NOVELTY_UNIT),
    "_spot_pearson": ("Pearson's r per spot", "Pearson's r across genes"),
    "_zscore": (None, Z_UNIT),
    "_z_score": (None, Z_UNIT),
}
#: ``obs`` columns whose colour-bar label is known.
_OBS_UNITS = {TUMOR_SCORE_KEY: TUMOR_UNIT, "tissue_fraction": "fraction of the tile in tissue"}
#: The per-gene metrics of ``ht.tl.evaluate`` in words.
METRIC_NAMES = {
    "pearson": "Pearson's r",
    "spearman": "Spearman's rho",
    "mae": "mean absolute error",
    "mse": "mean squared error",
    "r2": "R²",
}
#: Errors are in the unit of the expression (correlations and R² have none).
_METRIC_UNITS = {"mae": EXPRESSION_UNIT, "mse": f"squared {EXPRESSION_UNIT}"}


def metric_label(metric: str) -> str:
    """A metric's axis label: its name in words, with the unit of errors.

    Examples
    --------
    >>> metric_label("pearson"), metric_label("mae")
    ("Pearson's r", 'mean absolute error (log1p normalised counts)')
    """
    unit = _METRIC_UNITS.get(metric)
    return METRIC_NAMES.get(metric, metric) + (f" ({unit})" if unit else "")


def title_of(key: str) -> str:
    """A key as words for a title or label.

    ``"predicted_{method}"`` -> ``"predicted ({method})"``, ``"X"`` -> ``"measured"``,
    ``"{key}_novelty"`` -> ``"novelty"``, ``"{key}_spot_pearson"`` -> ``"Pearson's r per spot"``,
    ``"{name}_z_score"`` -> ``"{name} (z-score)"``; any other key with its underscores as spaces
    (``"tumor_score"`` -> ``"tumor score"``).

    Examples
    --------
    >>> title_of("predicted_ridge"), title_of("predicted_ridge_novelty"), title_of("region_label")
    ('predicted (ridge)', 'novelty', 'region label')
    >>> title_of("ERBB2_measured_z_score")
    'ERBB2 measured (z-score)'
    """
    key = str(key)
    if key in ("X", "measured"):
        return "measured"
    for suffix, (title, unit) in _SUFFIXES.items():
        if key.endswith(suffix) and len(key) > len(suffix):
            if title is not None:
                return title
            if unit == Z_UNIT:
                return f"{title_of(key[: -len(suffix)])} ({Z_UNIT})"
    if key.startswith(PREDICTED_PREFIX) and len(key) > len(PREDICTED_PREFIX):
        return f"predicted ({key[len(PREDICTED_PREFIX) :]})"
    return key.replace("_", " ")


def unit_of(key: str, *, gene: bool, layer: str | None = None, table: ad.AnnData | None = None) -> str:
    """The colour-bar (or axis) label of a gene's expression or of an ``obs`` column: its unit or meaning.

    Genes: :data:`EXPRESSION_UNIT` from ``X`` or a predictions layer, ``"counts"`` from
    ``layers["counts"]``, else the layer's name in words. ``obs`` columns: ``tumor_score``
    (:data:`TUMOR_UNIT`, or :data:`SIGNATURE_UNIT` when ``table`` records that
    :func:`~hist2st_tk.tl.tumor_regions` scored a marker signature), ``*_novelty``, ``*_spot_pearson``
    and ``*_zscore`` have known units; any other column is labelled by its name in words.
    """
    if gene:
        if layer is None or str(layer).startswith(PREDICTED_PREFIX):
            return EXPRESSION_UNIT
        return "counts" if layer == "counts" else title_of(layer)
    if key == TUMOR_SCORE_KEY and table is not None:
        params = table.uns.get(_TUMOR_REGIONS, {}).get("params", {})
        if params.get("method") == "signature":
            return SIGNATURE_UNIT
    if key in _OBS_UNITS:
        return _OBS_UNITS[key]
    for suffix, (_, unit) in _SUFFIXES.items():
        if str(key).endswith(suffix):
            return unit
    return title_of(key)


#: Units of values in [0, 1] that are drawn on that fixed scale, comparable across sections.
_UNIT_INTERVAL = frozenset({TUMOR_UNIT, SIGNATURE_UNIT, NOVELTY_UNIT})


#: z-scores are drawn from -Z_LIMIT to Z_LIMIT (further ones at the ends), so that panels compare.
Z_LIMIT = 3.0


def colour_range(values: pd.Series, unit: str) -> tuple[float | None, float | None]:
    """``(0, 1)`` for probabilities, signature scores and novelties that lie in it, ``(-3, 3)`` for
    z-scores, else ``(None, None)`` (the range of the values)."""
    finite = pd.to_numeric(values, errors="coerce").dropna()
    if unit in _UNIT_INTERVAL and len(finite) and finite.min() >= 0 and finite.max() <= 1:
        return 0.0, 1.0
    if unit == Z_UNIT:
        return -Z_LIMIT, Z_LIMIT
    return None, None


def x_source(table: ad.AnnData) -> str:
    """What ``X`` holds: ``"X"`` (measured), or the predictions key of an H&E-only slide."""
    for key in table.uns:
        if str(key).startswith(PREDICTED_PREFIX) and not has_measured(table, str(key)):
            return str(key)
    return "X"


#: Label colours of booleans (e.g. tumor True/False): tones of :func:`label_palette`, never cluster colours.
BOOLEAN_COLOURS = {True: "#ad494a", False: "#9c9ede"}
#: Colour of spots or regions without a label (on the image, such spots are drawn as outlines).
MISSING_COLOUR = "#bdbdbd"
#: Labels naming tumor take the reds of tab20b (True's first), those naming no class a grey.
_TUMOR_WORDS = re.compile(r"cancer|tumou?r|carcinoma|malignan")
_NEGATED = re.compile(r"\b(?:non|not|no)[\s_-]*(?:cancer|tumou?r|carcinoma|malignan)")
_TUMOR_REDS = ("#ad494a", "#843c39", "#d6616b", "#e7969c")
_UNKNOWN_WORDS = ("unknown", "undetermined", "unlabelled", "unlabeled", "unassigned")
_UNKNOWN_COLOUR = "#969696"
#: The other tones of matplotlib's tab20b (its reds left out), ordered so that neighbouring labels
#: differ in hue and lightness and stand out on the purple and pink of H&E; none occurs in
#: :func:`cluster_palette`.
_LABEL_TONES = (3, 10, 17, 7, 19, 8, 5, 0, 1, 11, 16, 2, 6, 9, 18, 4)


def cluster_palette(n: int) -> list[str]:
    """Colours of ``n`` clusters or groups, as scanpy draws them: tab10 (tab20's dark tones), then tab20's
    light tones; more than 20 evenly spaced along ``turbo``."""
    import matplotlib as mpl
    from matplotlib.colors import to_hex

    if n > 20:
        return [to_hex(c) for c in mpl.colormaps["turbo"](np.linspace(0.05, 0.95, n))]
    tab20 = [to_hex(c) for c in mpl.colormaps["tab20"].colors]
    return (tab20[0::2] + tab20[1::2])[:n]


def label_palette(categories: Sequence) -> list[str]:
    """Colours of label categories (annotations such as tumor True/False or region names), by a fixed rule.

    Booleans get :data:`BOOLEAN_COLOURS` (True red, False light blue). Other labels: those naming tumor
    (``cancer``, ``tumor``, ``carcinoma``, ``malignant``; not ``non-tumor``) take reds, True's first, so that
    they match a tumor panel beside them; those naming no class (``unknown``, ``undetermined``, ...) a
    grey; the rest, in order, the other muted tones of matplotlib's tab20b (cycled beyond 16). None of
    these occurs in :func:`cluster_palette`, so that a label never shares its colour with a cluster.

    Examples
    --------
    >>> label_palette(["adipose", "cancer 1", "cancer 2", "non-tumor", "unknown"])
    ['#9c9ede', '#ad494a', '#843c39', '#e7ba52', '#969696']
    """
    import matplotlib as mpl
    from matplotlib.colors import to_hex

    categories = list(categories)
    if categories and all(isinstance(c, bool | np.bool_) for c in categories):
        return [BOOLEAN_COLOURS[bool(c)] for c in categories]
    tab20b = [to_hex(c) for c in mpl.colormaps["tab20b"].colors]
    tones = [tab20b[i] for i in _LABEL_TONES]
    colours, n_red, n_tone = [], 0, 0
    for category in categories:
        name = str(category).lower()
        if _TUMOR_WORDS.search(name) and not _NEGATED.search(name):
            colours.append(_TUMOR_REDS[n_red % len(_TUMOR_REDS)])
            n_red += 1
        elif any(word in name for word in _UNKNOWN_WORDS):
            colours.append(_UNKNOWN_COLOUR)
        else:
            colours.append(tones[n_tone % len(tones)])
            n_tone += 1
    return colours


def category_colours(values: pd.Series, *, labels: bool) -> dict:
    """The colour of each category present in ``values`` (missing values left out), in sorted order:
    :func:`label_palette` with ``labels``, else :func:`cluster_palette`."""
    names = list(pd.Categorical(pd.Series(values).astype("object").dropna()).categories)
    palette = label_palette(names) if labels else cluster_palette(len(names))
    return dict(zip(names, palette, strict=True))


def is_label(name: str, values: pd.Series, labels: Sequence[str] = ()) -> bool:
    """Whether a categorical column is drawn with :func:`label_palette` rather than as clusters: boolean
    columns, columns named ``*label`` or ``*labels`` (e.g. ``region_label``), and those in ``labels``."""
    categories = pd.Series(values).dropna().unique()
    boolean = len(categories) > 0 and all(isinstance(c, bool | np.bool_) for c in categories)
    return boolean or str(name) in labels or str(name).endswith(("label", "labels"))


# -- scale bar ------------------------------------------------------------------------------------

def check_scale_bar(scale_bar: object) -> bool | float:
    """``scale_bar`` checked: a bool, or a positive, finite length in µm."""
    if isinstance(scale_bar, bool | np.bool_):
        return bool(scale_bar)
    if not isinstance(scale_bar, int | float | np.integer | np.floating):
        msg = f"`scale_bar` must be True, False or a length in µm, got a {type(scale_bar).__name__}."
        raise TypeError(msg)
    if not np.isfinite(scale_bar) or scale_bar <= 0:
        msg = f"`scale_bar` must be a positive length in µm, got {scale_bar!r}."
        raise ValueError(msg)
    return float(scale_bar)


def scale_bar_um(width_um: float) -> float:
    """A round length (1, 2 or 5 times a power of ten, in µm) of at most a fifth of ``width_um``.

    Examples
    --------
    >>> scale_bar_um(6000.0), scale_bar_um(800.0), scale_bar_um(3.0)
    (1000.0, 100.0, 0.5)
    """
    target = width_um / 5
    power = 10.0 ** np.floor(np.log10(target))
    return float(max(step * power for step in (1, 2, 5) if step * power <= target))


def format_um(length_um: float) -> str:
    """``"500 µm"``, ``"1 mm"``, ``"1.5 mm"``."""
    return f"{length_um / 1000:g} mm" if length_um >= 1000 else f"{length_um:g} µm"


def add_scale_bar(ax: Axes, mpp: float, length_um: float | None = None):
    """Draw a scale bar in the lower right corner of an image panel whose data units are full-resolution
    pixels of ``mpp`` microns (an overview level is drawn stretched to that extent, so the drawn
    downscale does not enter); ``length_um=None`` picks :func:`scale_bar_um` of the visible width.

    Returns the bar (a matplotlib ``AnchoredSizeBar``, labelled e.g. ``"500 µm"``).
    """
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    if length_um is None:
        length_um = scale_bar_um(abs(x1 - x0) * mpp)
    bar = AnchoredSizeBar(
        ax.transData,
        length_um / mpp,
        format_um(length_um),
        loc="lower right",
        pad=0.3,
        borderpad=0.4,
        sep=3,
        color="black",
        frameon=True,
        size_vertical=abs(y1 - y0) / 120,
        fontproperties={"size": 8},
    )
    bar.patch.set(facecolor="white", alpha=0.7, edgecolor="none")
    ax.add_artist(bar)
    return bar
