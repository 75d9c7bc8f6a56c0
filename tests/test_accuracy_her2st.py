"""Integration: lite0 features + the ridge recipe reproduce the reference numbers of DESIGN.md §6.

This proves the patches (physical size, centring, resampling) and the pretrained weights are right:
a patch off by a few microns or random weights lose several points of Pearson.
"""

from __future__ import annotations

import pytest

import hist2st_tk as ht
from hist2st_tk.bench import REFERENCE

pytestmark = pytest.mark.real_data


def test_her2st6_loso_ridge_matches_reference(her2st_lite0):
    result = ht.tl.cross_validate(her2st_lite0, method="ridge", protocol="her2st6-loso", use_rep="X_lite0")
    assert len(result.folds) == 12  # six folds, two panels
    mean = result.summary()["pearson"]
    reference = REFERENCE["her2st6-loso"]
    assert mean["top250mean"] == pytest.approx(reference["top250mean"], abs=0.02)
    assert mean["top50var"] == pytest.approx(reference["top50var"], abs=0.02)
    b4 = result.folds[result.folds["held_out"] == "B4"].set_index("panel")["pearson"]
    assert b4["top250mean"] == pytest.approx(REFERENCE["C->B4"]["top250mean"], abs=0.02)


def test_lite0_params_record_the_physical_scale(her2st_lite0):
    params = her2st_lite0["B4"]["table"].uns["X_lite0"]["params"]
    assert params["mpp_source"] == "st_grid"
    assert params["mpp"] == pytest.approx(0.6887, abs=1e-3)
    assert params["patch_px"] == pytest.approx(112 / params["mpp"])
    assert her2st_lite0["B4"]["table"].obsm["X_lite0"].shape == (283, 1280)
