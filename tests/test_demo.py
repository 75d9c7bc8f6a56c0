"""The HER2ST sections with features, as the demo and ``hist2st bench`` load them (one cached loader)."""

from __future__ import annotations

import numpy as np
import pytest

import hist2st_tk as ht
from hist2st_tk import _demo


def test_the_features_are_those_the_default_model_reads():
    """At the default recipe's working resolution, the loader's features are the shipped model's inputs:
    the same encoder, patch sizes, resolution and context graph (what pp.model_features replays)."""
    features = _demo.her2st_features(ht.models.DEFAULT_RECIPE["working_mpp"])
    assert features["use_rep"] == ht.models.DEFAULT_RECIPE["use_rep"]
    shipped = ht.models.default_model().feature_recipe["inputs"]
    assert set(shipped) == set(features["inputs"])
    for key, spec in features["inputs"].items():
        recorded = {k: v for k, v in shipped[key].items() if k != "dim"}
        if "graph" in recorded:
            recorded["graph"] = {k: v for k, v in recorded["graph"].items() if v is not None}
        assert spec == recorded, key
    assert {spec["working_mpp"] for spec in _demo.her2st_features(None)["inputs"].values()} == {None}


def test_with_renderings():
    sections = {"B4": 0, "C2": 1, "B4@4": 2, "C2@4": 3, "C3": 4, "C3@4": 5}
    assert _demo.with_renderings(["C2", "B4"], sections) == ["B4", "C2", "B4@4", "C2@4"]
    assert _demo.with_renderings(["C6"], sections) == []


@pytest.fixture
def cheap_sections(monkeypatch):
    """HER2ST names served by synthetic sections, and the loader's features from the patch FFT encoder
    (lite0 needs its weights and minutes); returns the names of the sections read from "disk"."""
    read = []

    def her2st(name, *, data_dir=None):
        read.append(name)
        return ht.datasets.synthetic(n_spots=16, n_genes=8, seed=2, sample=name, patient=name[0])

    real = _demo.her2st_features

    def features(working_mpp):
        recipe = real(working_mpp)
        for spec in recipe["inputs"].values():
            spec["encoder"] = "fft"
        return recipe

    monkeypatch.setattr(ht.datasets, "her2st", her2st)
    monkeypatch.setattr(_demo, "her2st_features", features)
    return read


def _old_bench_features(sdata, working_mpp):
    """What ``bench._accuracy.load_sections`` computed before the loaders were one: the multi-scale call,
    then the 300 um radius graph and the neighbour means of the 112 and 224 um features."""
    ht.pp.image_features(
        sdata,
        encoder="fft",
        patch_um=[56.0, 112.0, 224.0],
        working_mpp=working_mpp,
        key_added="X_lite0",
        progress=False,
    )
    ht.pp.spatial_graph(sdata, method="radius", radius_um=300)
    for key in ("X_lite0_112um", "X_lite0_224um"):
        ht.pp.aggregate_neighbors(sdata, use_rep=key)
    return sdata["table"].obsm


def test_sections_with_features_cache_and_renderings(cheap_sections, tmp_path):
    recipe = {"method": "ridge", "working_mpp": 2.0, "augment_mpp": [4.0]}
    loaded = _demo.sections_with_features(
        ["B4", "C2"], data_dir=None, cache_dir=tmp_path, recipe=recipe, progress=False
    )
    assert list(loaded) == ["B4", "B4@4", "C2", "C2@4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "B4_lite0.zarr",
        "B4_lite0_scan4.zarr",
        "C2_lite0.zarr",
        "C2_lite0_scan4.zarr",
    ]
    assert ht.io.get_mpp(loaded["C2@4"])[0] == 4.0 and ht.io.get_mpp(loaded["C2"])[0] == 1.0
    # the features are those of the former bench loader, to the bit, for the section and its rendering
    expected = _old_bench_features(ht.datasets.synthetic(n_spots=16, n_genes=8, seed=2, sample="C2"), 2.0)
    rendered = _old_bench_features(
        ht.pp.perturb(ht.datasets.synthetic(n_spots=16, n_genes=8, seed=2, sample="C2"), mpp=4.0), 2.0
    )
    for name, want in (("C2", expected), ("C2@4", rendered)):
        obsm = loaded[name]["table"].obsm
        for key in ht.models.DEFAULT_RECIPE["use_rep"]:
            np.testing.assert_array_equal(obsm[key], want[key], err_msg=f"{name} {key}")
        assert loaded[name]["table"].uns["X_lite0_224um_nbr"]["params"]["working_mpp"] == 2.0
    assert loaded["C2"]["table"].uns["X_lite0_112um_nbr"]["params"]["aggregated_from"] == "X_lite0_112um"

    # read back from the cache: no section is read again
    read = len(cheap_sections)
    again = _demo.sections_with_features(
        ["C2"], data_dir=None, cache_dir=tmp_path, recipe=recipe, renderings=False
    )
    assert list(again) == ["C2"] and len(cheap_sections) == read
    np.testing.assert_array_equal(
        again["C2"]["table"].obsm["X_lite0_224um_nbr"], expected["X_lite0_224um_nbr"]
    )


def test_sections_with_features_names_and_completes_bench_caches(cheap_sections, tmp_path):
    """With the working resolution in the names (bench's folder), a store holding only the image features
    (as bench wrote them before) is read as it is and gets its context features."""
    old = ht.datasets.synthetic(n_spots=16, n_genes=8, seed=2, sample="B4")
    ht.pp.image_features(
        old,
        encoder="fft",
        patch_um=[56.0, 112.0, 224.0],
        working_mpp=2.0,
        key_added="X_lite0",
        progress=False,
    )
    ht.io.write_zarr(old, tmp_path / "B4_lite0_at2.zarr")
    recipe = {"method": "ridge", "working_mpp": 2.0, "augment_mpp": [4.0]}
    loaded = _demo.sections_with_features(
        ["B4"], data_dir=None, cache_dir=tmp_path, recipe=recipe, name_working_mpp=True, progress=False
    )
    assert cheap_sections == ["B4"]  # only for the 4 um/px rendering: the section itself came from the cache
    assert sorted(p.name for p in tmp_path.iterdir()) == ["B4_lite0_at2.zarr", "B4_lite0_at2_scan4.zarr"]
    expected = _old_bench_features(ht.datasets.synthetic(n_spots=16, n_genes=8, seed=2, sample="B4"), 2.0)
    for key in ht.models.DEFAULT_RECIPE["use_rep"]:
        np.testing.assert_array_equal(loaded["B4"]["table"].obsm[key], expected[key], err_msg=key)
    # a recipe without a working resolution: features as scanned, no tag, no renderings asked for
    native = _demo.sections_with_features(
        ["B4"], data_dir=None, cache_dir=tmp_path, recipe={}, name_working_mpp=True, progress=False
    )
    assert list(native) == ["B4"] and (tmp_path / "B4_lite0.zarr").is_dir()
    assert native["B4"]["table"].uns["X_lite0_56um"]["params"].get("working_mpp") is None
