"""The tutorials' code cells run, in order, against the real data.

A notebook whose metadata holds ``"hist2st_tk": {"execute_in_tests": false}`` (too slow for the suite, or
needing data the project does not have) is only checked to parse and compile.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.ipynb"))


def _notebook(path: Path) -> dict:
    return json.loads(path.read_text())


def _executed(path: Path) -> bool:
    return _notebook(path)["metadata"].get("hist2st_tk", {}).get("execute_in_tests", True)


def _code(path: Path) -> list[str]:
    return ["".join(cell["source"]) for cell in _notebook(path)["cells"] if cell["cell_type"] == "code"]


EXECUTED = [path for path in NOTEBOOKS if _executed(path)]


def test_quickstart_is_executed():
    assert "quickstart" in [path.stem for path in EXECUTED]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_tutorial_compiles(notebook):
    for source in _code(notebook):
        compile(source, notebook.name, "exec")


@pytest.mark.real_data
@pytest.mark.parametrize("notebook", EXECUTED, ids=lambda p: p.stem)
def test_tutorial_runs(notebook, data_root, monkeypatch):
    import matplotlib.pyplot as plt

    monkeypatch.setenv("HIST2ST_TK_DATA", str(data_root))
    namespace: dict = {}
    for source in _code(notebook):
        exec(compile(source, notebook.name, "exec"), namespace)
    plt.close("all")
