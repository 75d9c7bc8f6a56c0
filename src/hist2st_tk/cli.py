"""The ``hist2st`` command line."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    from .datasets import HER2ST_SECTIONS

    parser = argparse.ArgumentParser(
        prog="hist2st",
        description="Predict spatial gene expression from H&E histology (hist2st_tk).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run the main job on the real HER2ST sections",
        description=(
            "Load the HER2ST sections (from --data-dir, $HIST2ST_TK_DATA/her2st or a checked download), "
            "write each as a .zarr SpatialData and an overview figure (H&E with spots coloured by ERBB2 "
            "and by the data authors' region labels), and a summary table."
        ),
    )
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--data-dir", default=None, help="folder holding the HER2ST section folders")
    demo.add_argument(
        "--sections",
        nargs="+",
        default=list(HER2ST_SECTIONS),
        choices=HER2ST_SECTIONS,
        metavar="SECTION",
        help=f"sections to process (default: all of {', '.join(HER2ST_SECTIONS)})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hist2st``; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        import matplotlib

        matplotlib.use("Agg")
        from ._demo import run_demo

        summary = run_demo(args.out, sections=args.sections, data_dir=args.data_dir)
        print(summary.to_string(index=False))
        print(f"\nDemo outputs written to {args.out}/ (summary.md, *_overview.png, *.zarr)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
