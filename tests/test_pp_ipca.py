"""ht.pp.ipca: incremental PCA fitted on the training sections only, applied to every section."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.decomposition import PCA

import hist2st_tk as ht
from hist2st_tk.pp._ipca import _batches, ipca

N_SPOTS = 49
N_FEATURES = 12
REP = "X_feat"


def _features(rng: np.random.Generator, n: int) -> np.ndarray:
    """Four strong directions (clear eigen-gap) plus a little isotropic noise."""
    basis = np.linalg.qr(np.random.default_rng(99).normal(size=(N_FEATURES, 4)))[0].T
    scores = rng.normal(size=(n, 4)) * np.array([5.0, 4.0, 3.0, 2.0])
    return (scores @ basis + 3.0 + 0.01 * rng.normal(size=(n, N_FEATURES))).astype(np.float32)


@pytest.fixture(scope="module")
def base_sections():
    sections = []
    for s in range(3):
        sdata = ht.datasets.synthetic(n_spots=N_SPOTS, n_genes=3, seed=s, sample=f"s{s}", mpp=5.0)
        sdata["table"].obsm[REP] = _features(np.random.default_rng(s), N_SPOTS)
        sections.append(sdata)
    return sections


@pytest.fixture
def sections(base_sections):
    """Fresh SpatialData objects sharing the images, each with its own copy of the table."""
    from spatialdata import SpatialData

    return [
        SpatialData(images=dict(sd.images), shapes=dict(sd.shapes), tables={"table": sd["table"].copy()})
        for sd in base_sections
    ]


def _stacked(sections, which=None):
    which = range(len(sections)) if which is None else which
    return np.concatenate([sections[i]["table"].obsm[REP] for i in which]).astype(np.float64)


def _align_signs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a`` with each column's sign flipped to agree with ``b``."""
    return a * np.sign((a * b).sum(axis=0))


def test_matches_pca_up_to_sign(sections):
    model = ipca(sections, use_rep=REP, n_comps=4, batch_size=20)
    reference = PCA(n_components=4).fit(_stacked(sections))
    np.testing.assert_allclose(
        model.explained_variance_ratio_, reference.explained_variance_ratio_, rtol=1e-3
    )
    # Same subspace: |cos| between matching components is 1.
    cosines = np.abs(np.sum(model.components_ * reference.components_, axis=1))
    np.testing.assert_allclose(cosines, 1.0, atol=1e-4)
    for sdata in sections:
        table = sdata["table"]
        reduced = table.obsm[f"{REP}_ipca"]
        assert reduced.dtype == np.float32 and reduced.shape == (N_SPOTS, 4)
        expected = reference.transform(table.obsm[REP].astype(np.float64))
        np.testing.assert_allclose(_align_signs(reduced, expected), expected, atol=2e-3)


def test_fit_on_restricts_fitting(sections):
    model = ipca(sections, use_rep=REP, n_comps=4, fit_on=["s0", 1], batch_size=16)
    reference = PCA(n_components=4).fit(_stacked(sections, [0, 1]))
    cosines = np.abs(np.sum(model.components_ * reference.components_, axis=1))
    np.testing.assert_allclose(cosines, 1.0, atol=1e-4)
    held_out = sections[2]["table"]
    np.testing.assert_allclose(
        held_out.obsm[f"{REP}_ipca"],
        model.transform(held_out.obsm[REP].astype(np.float64)),
        rtol=1e-5,
        atol=1e-5,
    )

    # Changing the held-out section's features changes nothing in the fitted components.
    held_out.obsm[REP] = (held_out.obsm[REP] * 7.0 - 40.0).astype(np.float32)
    again = ipca(sections, use_rep=REP, n_comps=4, fit_on=[sections[0], sections[1]], batch_size=16)
    np.testing.assert_array_equal(again.components_, model.components_)
    np.testing.assert_array_equal(again.mean_, model.mean_)
    assert held_out.uns[f"{REP}_ipca"]["params"]["fitted_on"] == ["s0", "s1"]


def test_params_and_key_added(sections):
    model = ipca(sections[:2], use_rep=REP, n_comps=5, batch_size=30, key_added="X_small", whiten=True)
    assert model.fitted_on_ == ["s0", "s1"]
    for sdata in sections[:2]:
        table = sdata["table"]
        assert f"{REP}_ipca" not in table.obsm
        assert table.obsm["X_small"].shape == (N_SPOTS, 5)
        params = table.uns["X_small"]["params"]
        assert params["use_rep"] == REP
        assert params["n_comps"] == params["n_comps_requested"] == 5
        assert params["fitted_on"] == ["s0", "s1"]
        assert params["batch_size"] == 30
        assert params["whiten"] is True and params["refit"] is True
        np.testing.assert_allclose(params["explained_variance_ratio"], model.explained_variance_ratio_)
        assert all(isinstance(v, float) for v in params["explained_variance_ratio"])


def test_model_reuse_does_not_refit(sections):
    model = ipca(sections[:2], use_rep=REP, n_comps=4)
    components = model.components_.copy()
    returned = ipca(sections[2], use_rep=REP, model=model)
    assert returned is model
    np.testing.assert_array_equal(model.components_, components)
    table = sections[2]["table"]
    np.testing.assert_allclose(
        table.obsm[f"{REP}_ipca"], model.transform(table.obsm[REP].astype(np.float64)), rtol=1e-5, atol=1e-5
    )
    params = table.uns[f"{REP}_ipca"]["params"]
    assert params["refit"] is False
    assert params["fitted_on"] == ["s0", "s1"]
    assert params["n_comps"] == 4


def test_model_from_sklearn_has_no_fitted_on(sections):
    model = PCA(n_components=2).fit(_stacked(sections))
    ipca(sections[0], use_rep=REP, model=model)
    assert sections[0]["table"].uns[f"{REP}_ipca"]["params"]["fitted_on"] is None


def test_n_comps_clipped_with_warning(sections, caplog):
    with caplog.at_level(logging.WARNING, logger="hist2st_tk"):
        model = ipca(sections, use_rep=REP, n_comps=256)
    assert model.n_components_ == N_FEATURES
    assert "clipped to 12" in caplog.text
    params = sections[0]["table"].uns[f"{REP}_ipca"]["params"]
    assert (params["n_comps"], params["n_comps_requested"]) == (N_FEATURES, 256)


def test_batches_cover_rows_and_merge_a_short_last_batch():
    arrays = [np.arange(7 * 2).reshape(7, 2), np.arange(5 * 2).reshape(5, 2) + 100, np.ones((9, 2))]
    batches = list(_batches(arrays, batch_size=5, min_rows=3))
    assert [len(b) for b in batches] == [5, 5, 5, 6]
    np.testing.assert_array_equal(np.concatenate(batches), np.concatenate(arrays))
    assert all(b.dtype == np.float64 for b in batches)


def test_missing_rep_lists_keys(sections):
    with pytest.raises(
        KeyError, match=r"no `obsm\['X_lite0'\]`.*obsm keys: \['spatial', 'X_feat'\].*ht\.pp\.image_features"
    ):
        ipca(sections, use_rep="X_lite0")


def test_non_finite_features(sections):
    bad = sections[1]["table"].obsm[REP].copy()
    bad[3, 2] = np.nan
    bad[7, 0] = np.inf
    sections[1]["table"].obsm[REP] = bad
    with pytest.raises(ValueError, match=r"section 's1' has NaN or infinite values in 2 spots"):
        ipca(sections, use_rep=REP, n_comps=3)


def test_mismatched_feature_dims(sections):
    sections[2]["table"].obsm[REP] = sections[2]["table"].obsm[REP][:, :10]
    with pytest.raises(
        ValueError, match=r"different number of features per section: \{'s0': 12, 's1': 12, 's2': 10\}"
    ):
        ipca(sections, use_rep=REP, n_comps=3)


def test_fit_on_must_name_passed_sections(sections):
    with pytest.raises(ValueError, match=r"names section 'B4', which is not in `sdatas`"):
        ipca(sections, use_rep=REP, fit_on=["s0", "B4"])
    other = ht.datasets.synthetic(n_spots=4, n_genes=3, sample="other", mpp=5.0)
    with pytest.raises(ValueError, match="not in `sdatas`"):
        ipca(sections[:2], use_rep=REP, fit_on=[other])
    with pytest.raises(ValueError, match="index 5 is out of range"):
        ipca(sections, use_rep=REP, fit_on=[5])
    with pytest.raises(ValueError, match="`fit_on` is empty"):
        ipca(sections, use_rep=REP, fit_on=[])


def test_model_argument_errors(sections):
    model = ipca(sections, use_rep=REP, n_comps=3)
    with pytest.raises(ValueError, match="cannot be used with `model=`"):
        ipca(sections, use_rep=REP, model=model, fit_on=["s0"])
    sections[0]["table"].obsm["X_other"] = np.zeros((N_SPOTS, 5), dtype=np.float32)
    with pytest.raises(ValueError, match="fitted on 12 features, but `obsm\\['X_other'\\]` has 5"):
        ipca(sections[0], use_rep="X_other", model=model)
    with pytest.raises(TypeError, match="fitted sklearn IncrementalPCA"):
        ipca(sections[0], use_rep=REP, model=object())


def test_argument_checks(sections):
    with pytest.raises(ValueError, match="`batch_size=2` must be at least the number of components"):
        ipca(sections, use_rep=REP, n_comps=4, batch_size=2)
    with pytest.raises(ValueError, match="`n_comps` must be at least 1"):
        ipca(sections, use_rep=REP, n_comps=0)
    with pytest.raises(ValueError, match="same SpatialData"):
        ipca([sections[0], sections[0]], use_rep=REP)


def test_failed_call_leaves_every_table_unchanged(sections):
    ipca(sections, use_rep=REP, n_comps=3)
    before = [(sd["table"].obsm[f"{REP}_ipca"].copy(), dict(sd["table"].uns)) for sd in sections]
    bad = sections[2]["table"].obsm[REP].copy()
    bad[0, 0] = np.nan
    sections[2]["table"].obsm[REP] = bad
    with pytest.raises(ValueError, match="NaN"):
        ipca(sections, use_rep=REP, n_comps=5, key_added=f"{REP}_ipca")
    with pytest.raises(ValueError, match="not in `sdatas`"):
        ipca(sections[:2], use_rep=REP, n_comps=5, fit_on=["nope"], key_added="X_new")
    for sdata, (reduced, uns) in zip(sections, before, strict=True):
        table = sdata["table"]
        np.testing.assert_array_equal(table.obsm[f"{REP}_ipca"], reduced)
        assert table.uns[f"{REP}_ipca"]["params"]["n_comps"] == 3
        assert "X_new" not in table.obsm and set(table.uns) == set(uns)
