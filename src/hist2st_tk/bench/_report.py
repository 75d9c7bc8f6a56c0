"""Benchmark results on disk: one JSON with everything, one Markdown table to read."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .._markdown import markdown_table

if TYPE_CHECKING:
    import pandas as pd


def machine() -> dict:
    """What the numbers were measured on."""
    import os

    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_report(
    name: str, table: pd.DataFrame, *, out_dir: str | Path, title: str, notes: list[str]
) -> Path:
    """Write ``{name}.json`` (rows, notes, machine) and ``{name}.md`` into ``out_dir``; returns the .md path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    payload = {"title": title, "machine": info, "notes": notes, "rows": table.to_dict(orient="records")}
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str))
    lines = [f"# {title}", "", markdown_table(table), ""]
    lines += [f"- {note}" for note in notes]
    lines += [f"- machine: {', '.join(f'{k}={v}' for k, v in info.items())}", ""]
    path = out / f"{name}.md"
    path.write_text("\n".join(lines))
    return path
