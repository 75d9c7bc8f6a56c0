"""Compare a rendered figure with a stored PNG, as spatialdata-plot and matplotlib do.

The baselines live in ``tests/baseline/<name>.png``. Regenerate them (after an intended change of a
plot, then look at every image before committing) with::

    HIST2ST_TK_UPDATE_BASELINES=1 .venv/bin/python -m pytest tests/test_pl_*.py -p no:cacheprovider

A failing comparison leaves the rendered image and the difference image (``*-failed-diff.png``)
side by side in the test's temporary folder, named in the failure message.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

BASELINE_DIR = Path(__file__).resolve().parent / "baseline"
UPDATE_ENV = "HIST2ST_TK_UPDATE_BASELINES"
#: Low resolution keeps the baselines small (a few tens of KB).
DPI = 50
#: Root-mean-square difference of pixel values (0-255) that still passes: survives font hinting and
#: anti-aliasing differences across machines, not a changed colour scale or missing panel.
TOLERANCE = 15.0


def check_figure(fig, name: str, folder: Path, *, tol: float = TOLERANCE) -> None:
    """Render ``fig`` at a fixed size and dpi and compare it with ``tests/baseline/{name}.png``.

    With ``$HIST2ST_TK_UPDATE_BASELINES`` set, the rendering replaces the baseline instead.
    """
    import matplotlib.pyplot as plt
    from matplotlib.testing.compare import compare_images

    actual = folder / f"{name}.png"
    fig.savefig(actual, dpi=DPI)  # no tight bbox: the image size must not depend on text extents
    plt.close(fig)
    baseline = BASELINE_DIR / f"{name}.png"
    if os.environ.get(UPDATE_ENV):
        BASELINE_DIR.mkdir(exist_ok=True)
        shutil.copyfile(actual, baseline)
        return
    if not baseline.is_file():
        pytest.fail(f"No baseline {baseline}; create it with {UPDATE_ENV}=1 (see tests/_image_compare.py).")
    failure = compare_images(str(baseline), str(actual), tol=tol)
    if failure is not None:
        pytest.fail(f"{name}: {failure} (rendering and difference in {folder})")
