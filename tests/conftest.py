"""Shared fixtures: where the real data lives, and cheap synthetic sections."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def real_data_root() -> Path | None:
    """``$HIST2ST_TK_DATA`` or ``../shared/data`` beside the repository, when present."""
    candidates = [os.environ.get("HIST2ST_TK_DATA"), REPO.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = real_data_root()
    if root is None:
        pytest.skip("real data not found: set HIST2ST_TK_DATA to the folder holding her2st/ and visium_*/")
    return root


@pytest.fixture(scope="session")
def visium_root(data_root: Path) -> Path:
    return data_root
