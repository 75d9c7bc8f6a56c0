"""``hist2st`` (and ``python -m hist2st_tk``): the library's commands and, beside them, ``hist2st bench``.

This module sits above both: the library's command line (:mod:`hist2st_tk.cli`) does not import the
benchmarks, and the benchmarks use the library's public API.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from . import cli
from .bench import _cli as bench_cli


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hist2st``; returns the exit status (see :func:`hist2st_tk.cli.main`)."""
    return cli.main(argv, extensions=[bench_cli])


if __name__ == "__main__":
    sys.exit(main())
