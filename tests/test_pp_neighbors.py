"""Mean features of the spatial neighbours."""

from __future__ import annotations

import numpy as np
import pytest

import hist2st_tk as ht


@pytest.fixture
def section():
    sdata = ht.datasets.synthetic(n_spots=16, n_genes=4)
    table = sdata["table"]
    table.obsm["X_f"] = np.arange(32, dtype=np.float32).reshape(16, 2)
    table.uns["X_f"] = {"params": {"encoder": {"name": "f"}, "patch_um": 56.0}}
    return sdata


def test_mean_of_the_neighbours(section):
    ht.pp.spatial_graph(section, method="grid", n_neighs=4)
    ht.pp.aggregate_neighbors(section, use_rep="X_f")
    table = section["table"]
    graph = table.obsp["spatial_connectivities"].toarray()
    i = 5
    expected = table.obsm["X_f"][graph[i] > 0].mean(axis=0)
    np.testing.assert_allclose(table.obsm["X_f_nbr"][i], expected)
    params = table.uns["X_f_nbr"]["params"]
    assert params["patch_um"] == 56.0 and params["aggregated_from"] == "X_f"
    assert params["graph"]["method"] == "grid" and params["n_isolated"] == 0


def test_isolated_spots_keep_their_features(section):
    ht.pp.spatial_graph(section, method="radius", radius_um=50)  # pitch 100 um: nobody is a neighbour
    ht.pp.aggregate_neighbors(section, use_rep="X_f", key_added="ctx")
    table = section["table"]
    np.testing.assert_allclose(table.obsm["ctx"], table.obsm["X_f"])
    assert table.uns["ctx"]["params"]["n_isolated"] == 16


def test_bad_input_writes_nothing(section):
    with pytest.raises(KeyError, match=r"no obsp\['spatial_connectivities'\].*spatial_graph"):
        ht.pp.aggregate_neighbors(section, use_rep="X_f")
    ht.pp.spatial_graph(section, method="knn", n_neighs=3)
    with pytest.raises(KeyError, match=r"no obsm\['X_nope'\].*image_features"):
        ht.pp.aggregate_neighbors(section, use_rep="X_nope")
    assert "X_f_nbr" not in section["table"].obsm
