"""Tables as Markdown, for the demo's report and the benchmarks' tables: numbers to three significant
digits, p-values below float precision as ``"< 1e-300"``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from collections.abc import Sequence


#: Columns that :func:`markdown_table` prints with :func:`format_pvalue` unless told otherwise.
PVALUE_COLUMNS: tuple[str, ...] = ("pvalue", "pvalue_adj", "pvals", "pvals_adj")
#: P-values below this are printed as ``"< 1e-300"``: near the smallest positive double (about 2e-308),
#: so their digits (or a 0 they underflowed to) say nothing but "below float precision".
PVALUE_FLOOR = 1e-300


def format_pvalue(p: float) -> str:
    """A p-value as text: ``"< 1e-300"`` below float precision (0 included), ``"3.2e-05"`` below 0.001,
    else two significant digits (``"0.032"``, ``"1"``); ``"NaN"`` for a missing one.

    Examples
    --------
    >>> [format_pvalue(p) for p in (0.0, 3.21e-05, 0.0321, 1.0, float("nan"))]
    ['< 1e-300', '3.2e-05', '0.032', '1', 'NaN']
    """
    if p is None or p is pd.NA:
        return "NaN"
    try:
        value = float(p)
    except (TypeError, ValueError):
        msg = f"A p-value must be a number, got {p!r}."
        raise TypeError(msg) from None
    if value != value:  # NaN: no test
        return "NaN"
    if not 0 <= value <= 1:
        msg = f"A p-value lies in [0, 1], got {value!r}."
        raise ValueError(msg)
    if value < PVALUE_FLOOR:
        return f"< {PVALUE_FLOOR:.0e}"
    return f"{value:.1e}" if value < 1e-3 else f"{value:.2g}"


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def markdown_table(table: pd.DataFrame, *, pvalues: Sequence[str] | None = None) -> str:
    """``table`` as a GitHub Markdown table, floats to three significant digits, p-values by
    :func:`format_pvalue`.

    Parameters
    ----------
    table
        The rows to print (its index is left out).
    pvalues
        Columns of p-values; default: those of :data:`PVALUE_COLUMNS` that ``table`` has.

    Returns
    -------
    The table's lines, joined by newlines.
    """
    columns = [str(c) for c in table.columns]
    if pvalues is None:
        pvalues = [c for c in columns if c in PVALUE_COLUMNS]
    else:
        pvalues = [pvalues] if isinstance(pvalues, str) else list(pvalues)
        missing = [c for c in pvalues if c not in columns]
        if missing:
            msg = f"`pvalues` names columns the table lacks: {missing}; its columns: {columns}."
            raise ValueError(msg)
    formats = [format_pvalue if c in pvalues else _cell for c in columns]
    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join(" --- " for _ in columns) + "|"
    body = [
        "| " + " | ".join(fmt(v) for fmt, v in zip(formats, row, strict=True)) + " |"
        for row in table.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body])
