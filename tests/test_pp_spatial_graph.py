from __future__ import annotations

import numpy as np
import pytest

import hist2st_tk as ht

N_SIDE = 8  # synthetic(n_spots=64) is an 8 x 8 grid with a 100 um pitch


def degrees(table, key: str = "spatial") -> np.ndarray:
    return np.asarray(table.obsp[f"{key}_connectivities"].sum(axis=1)).ravel().astype(int)


def interior(table) -> np.ndarray:
    x, y = table.obs["array_x"].to_numpy(), table.obs["array_y"].to_numpy()
    present = set(zip(x.tolist(), y.tolist(), strict=True))
    return np.array(
        [
            all((a + dx, b + dy) in present for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)))
            for a, b in zip(x.tolist(), y.tolist(), strict=True)
        ]
    )


def grid_neighbours(table, i: int) -> set[int]:
    x, y = table.obs["array_x"].to_numpy(), table.obs["array_y"].to_numpy()
    return set(np.flatnonzero(np.abs(x - x[i]) + np.abs(y - y[i]) == 1).tolist())


@pytest.fixture
def section():
    return ht.datasets.synthetic(n_spots=N_SIDE * N_SIDE, n_genes=6, seed=0, mpp=1.0)


def test_knn_connects_interior_spots_to_their_grid_neighbours(section):
    ht.pp.spatial_graph(section, n_neighs=4)
    table = section["table"]
    conn = table.obsp["spatial_connectivities"].tocsr()
    inner = np.flatnonzero(interior(table))
    assert len(inner) == (N_SIDE - 2) ** 2
    for i in inner:
        assert set(conn[i].indices.tolist()) == grid_neighbours(table, i)
    dist = table.obsp["spatial_distances"].tocsr()
    np.testing.assert_allclose(dist[inner].data, 100.0)  # pixels, at 1 um/px


@pytest.mark.parametrize(("radius_um", "expected"), [(120.0, 4), (150.0, 8), (150.0 * np.sqrt(2), 12)])
def test_radius_in_microns(section, radius_um, expected):
    # grid distances: 100 um (4 spots), 141 um (4 diagonals), 200 um (4 spots two steps away)
    ht.pp.spatial_graph(section, method="radius", radius_um=radius_um)
    table = section["table"]
    x, y = table.obs["array_x"].to_numpy(), table.obs["array_y"].to_numpy()
    deep = (x >= 2) & (x <= N_SIDE - 3) & (y >= 2) & (y <= N_SIDE - 3)
    assert (degrees(table)[deep] == expected).all()


def test_radius_scales_with_mpp():
    sdata = ht.datasets.synthetic(n_spots=N_SIDE * N_SIDE, n_genes=6, mpp=0.5)
    ht.pp.spatial_graph(sdata, method="radius", radius_um=120)
    table = sdata["table"]
    assert (degrees(table)[interior(table)] == 4).all()
    np.testing.assert_allclose(table.obsp["spatial_distances"].data.max(), 200.0)  # 100 um = 200 px
    params = table.uns["spatial_neighbors"]["params"]
    assert params["mpp"] == 0.5
    assert params["radius_px"] == pytest.approx(240.0)
    assert params["radius"] == pytest.approx(240.0)  # squidpy's own, in pixels


def test_grid_square(section):
    ht.pp.spatial_graph(section, method="grid", n_neighs=4)
    table = section["table"]
    inner = interior(table)
    assert (degrees(table)[inner] == 4).all()
    assert (degrees(table)[~inner] < 4).all()
    assert table.uns["spatial_neighbors"]["params"]["coord_type"] == "grid"


def test_keys_and_params(section, caplog):
    with caplog.at_level("INFO", logger="hist2st_tk"):
        assert ht.pp.spatial_graph(section, method="radius", radius_um=120, key_added="ring") is None
    table = section["table"]
    assert {"ring_connectivities", "ring_distances"} <= set(table.obsp)
    uns = table.uns["ring_neighbors"]
    assert uns["connectivities_key"] == "ring_connectivities"
    assert uns["distances_key"] == "ring_distances"
    params = uns["params"]
    assert params["method"] == "radius"
    assert params["radius_um"] == 120.0
    assert params["mpp"] == 1.0
    assert params["n_neighs"] is None
    assert params["coord_type"] == "generic"  # squidpy's parameters are kept
    assert "spatial_connectivities" not in table.obsp
    for key in ("obsp['ring_connectivities']", "obsp['ring_distances']", "uns['ring_neighbors']"):
        assert f"added table.{key}" in caplog.text

    ht.pp.spatial_graph(section, method="knn", n_neighs=4)
    params = table.uns["spatial_neighbors"]["params"]
    assert params["method"] == "knn"
    assert params["n_neighs"] == 4
    assert params["n_neighbors"] == 4
    assert params["radius_um"] is None
    assert params["mpp"] == 1.0


def test_knn_without_mpp_records_none(section):
    section.attrs["hist2st_tk"]["mpp"].clear()
    ht.pp.spatial_graph(section, n_neighs=4)
    assert section["table"].uns["spatial_neighbors"]["params"]["mpp"] is None


def test_copy_leaves_input_unchanged(section):
    table = section["table"]
    obsp, uns = set(table.obsp), set(table.uns)
    attrs = repr(section.attrs)
    out = ht.pp.spatial_graph(section, method="grid", n_neighs=4, copy=True)
    assert out is not section
    assert set(table.obsp) == obsp
    assert set(table.uns) == uns
    assert section["table"] is table
    assert repr(section.attrs) == attrs
    assert "spatial_connectivities" in out["table"].obsp
    assert "spatial_neighbors" in out["table"].uns
    assert set(out.images) == set(section.images)
    assert set(out.shapes) == set(section.shapes)
    assert ht.io.get_mpp(out) == ht.io.get_mpp(section)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"method": "delaunay"},
            ValueError,
            r"Unknown method 'delaunay'; use one of \['knn', 'radius', 'grid'\]",
        ),
        ({"method": "radius"}, ValueError, "needs `radius_um`"),
        ({"method": "radius", "radius_um": 0}, ValueError, "positive, finite"),
        ({"method": "radius", "radius_um": -5.0}, ValueError, "positive, finite"),
        ({"method": "radius", "radius_um": float("nan")}, ValueError, "positive, finite"),
        ({"method": "radius", "radius_um": "100"}, TypeError, "positive number of microns"),
        ({"method": "knn", "radius_um": 100.0}, ValueError, "only used by `method='radius'`"),
        ({"n_neighs": 64}, ValueError, r"smaller than the number of spots \(64\)"),
        ({"method": "grid", "n_neighs": 100}, ValueError, "smaller than the number of spots"),
        ({"n_neighs": 0}, ValueError, "at least 1"),
        ({"n_neighs": 2.5}, TypeError, "must be an integer"),
        ({"table_key": "spots"}, KeyError, "No table 'spots'"),
    ],
)
def test_bad_input(section, kwargs, error, match):
    before = set(section["table"].obsp), set(section["table"].uns)
    with pytest.raises(error, match=match):
        ht.pp.spatial_graph(section, **kwargs)
    assert (set(section["table"].obsp), set(section["table"].uns)) == before


def test_missing_spatial_names_the_reader(section):
    del section["table"].obsm["spatial"]
    with pytest.raises(KeyError, match=r"has no obsm\['spatial'\]: the readers \(`ht\.io\.read_st`"):
        ht.pp.spatial_graph(section)


def test_radius_without_mpp_names_the_fix(section):
    section.attrs["hist2st_tk"]["mpp"].clear()
    with pytest.raises(KeyError, match=r"ht\.io\.set_mpp"):
        ht.pp.spatial_graph(section, method="radius", radius_um=120)
    assert "spatial_neighbors" not in section["table"].uns


@pytest.mark.real_data
def test_her2st_st_square_grid(her2st):
    sdata = her2st("B4")
    graph = ht.pp.spatial_graph(sdata, method="grid", n_neighs=4, copy=True)
    assert "spatial_connectivities" not in sdata["table"].obsp  # the cached section is untouched
    table = graph["table"]
    inner = interior(table)
    assert inner.sum() > 100
    assert (degrees(table)[inner] == 4).all()

    mpp, source = ht.io.get_mpp(graph)
    assert source == "st_grid"
    conn = table.obsp["spatial_connectivities"].tocoo()
    xy = table.obsm["spatial"]
    length_um = np.linalg.norm(xy[conn.row] - xy[conn.col], axis=1) * mpp
    assert np.median(length_um) == pytest.approx(200.0, rel=0.02)
    x, y = table.obs["array_x"].to_numpy(), table.obs["array_y"].to_numpy()
    steps = np.abs(x[conn.row] - x[conn.col]) + np.abs(y[conn.row] - y[conn.col])
    assert (steps == 1).mean() > 0.95  # edges join array neighbours
    assert table.uns["spatial_neighbors"]["params"]["mpp"] == mpp


def test_building_a_graph_prints_no_third_party_warning():
    """squidpy's docrep warns at import; the user sees none of it (a fresh interpreter, default filters)."""
    import subprocess
    import sys

    code = (
        "import hist2st_tk as ht\n"
        "sdata = ht.datasets.synthetic(n_spots=16, n_genes=4)\n"
        "ht.pp.spatial_graph(sdata)\n"
    )
    result = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr
