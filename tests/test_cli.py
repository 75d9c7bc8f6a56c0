from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from hist2st_tk.cli import main


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "hist2st_tk.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout


def test_unknown_section_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--sections", "Z9"])
    assert "invalid choice: 'Z9'" in capsys.readouterr().err


@pytest.mark.real_data
def test_demo_writes_zarr_figure_and_summary(data_root, tmp_path, capsys):
    assert (
        main(["demo", "--out", str(tmp_path), "--sections", "C3", "--data-dir", str(data_root / "her2st")])
        == 0
    )
    assert (tmp_path / "C3.zarr").is_dir()
    assert (tmp_path / "C3_overview.png").stat().st_size > 50_000
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary.loc[0, "section"] == "C3" and summary.loc[0, "mpp_source"] == "st_grid"
    assert "Demo outputs written to" in capsys.readouterr().out
