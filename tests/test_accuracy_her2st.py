"""Integration: lite0 features + the ridge recipe reproduce the reference numbers of docs/protocols.md.

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


def test_novelty_passes_a_held_out_section_and_flags_another_tissue(her2st_lite0, data_root, caplog):
    """Fitted on C2-C6: HER2ST B4 (another patient) raises no warning; the mouse embryo Visium sample
    (another tissue and species, a low-resolution image at 18 um/px) does, and looks more novel."""
    import logging

    from spatialdata import SpatialData

    train = [her2st_lite0[name] for name in ("C2", "C3", "C4", "C5", "C6")]
    model = ht.tl.fit_predictor(train, method="ridge", genes=50, use_rep="X_lite0", center=True)
    b4 = her2st_lite0["B4"]  # shared by the session: predict into a copy of its table
    held_out = SpatialData(
        images=dict(b4.images), shapes=dict(b4.shapes), tables={"table": b4["table"].copy()}, attrs=dict(b4.attrs)
    )
    with caplog.at_level(logging.WARNING, logger="hist2st_tk"):
        ht.tl.predict_expression(held_out, model, compute_features=False)
    b4_novelty = held_out["table"].uns["predicted_ridge"]["novelty"]
    assert b4_novelty["fraction_out_of_distribution"] < 0.5
    assert "look unlike" not in caplog.text and "outside the range" not in caplog.text

    embryo = ht.io.read_visium(data_root / "visium_mouse_embryo")
    table = embryo["table"][:300].copy()  # a subset keeps the test short
    embryo = SpatialData(
        images=dict(embryo.images), shapes=dict(embryo.shapes), tables={"table": table}, attrs=dict(embryo.attrs)
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hist2st_tk"):
        ht.tl.predict_expression(embryo, model, progress=False)
    assert "outside the range the 'ridge' model is meant for" in caplog.text  # before any feature
    novelty = embryo["table"].uns["predicted_ridge"]["novelty"]
    assert novelty["median"] > b4_novelty["median"]
    assert novelty["fraction_out_of_distribution"] > 2 * b4_novelty["fraction_out_of_distribution"]
