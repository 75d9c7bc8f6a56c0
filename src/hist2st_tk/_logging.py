"""The package logger: what each function added, scanpy style."""

from __future__ import annotations

import logging

logger = logging.getLogger("hist2st_tk")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(levelname)s [hist2st_tk] %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)


def log_added(where: str, shape: tuple[int, ...] | None = None) -> None:
    """Log one key a function wrote, e.g. ``added table.obsm['X_lite0'] (283 x 1280)``."""
    size = f" ({' x '.join(str(n) for n in shape)})" if shape else ""
    logger.info("added %s%s", where, size)


def format_ids(ids, n: int = 5) -> str:
    """A short, readable list of a few ids for error messages."""
    ids = list(ids)
    head = ", ".join(repr(str(i)) for i in ids[:n])
    return f"{head}, ... ({len(ids)} in all)" if len(ids) > n else head
