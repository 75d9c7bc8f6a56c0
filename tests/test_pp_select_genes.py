from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hist2st_tk as ht

KEY = "hist2st_genes"


def section(seed: int, *, n_genes: int = 30, sample: str | None = None):
    return ht.datasets.synthetic(n_spots=36, n_genes=n_genes, seed=seed, sample=sample or f"s{seed}")


@pytest.fixture
def train():
    return [section(0), section(1)]


@pytest.fixture
def held_out():
    return section(2)


def dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)


def ranked(values: np.ndarray, names: pd.Index, n: int) -> list[str]:
    """Highest value first, ties by name: recomputed independently of the implementation."""
    pairs = sorted(zip(values.tolist(), names.tolist(), strict=True), key=lambda p: (-p[0], p[1]))
    return [name for _, name in pairs[:n]]


def snapshot(sdatas) -> list[tuple]:
    return [
        (s["table"].var.copy(), dict(s["table"].uns), s["table"].X.copy(), dict(s["table"].layers))
        for s in sdatas
    ]


def assert_unchanged(sdatas, before) -> None:
    for s, (var, uns, x, layers) in zip(sdatas, before, strict=True):
        table = s["table"]
        pd.testing.assert_frame_equal(table.var, var)
        assert KEY not in table.var.columns
        assert set(table.uns) == set(uns)
        assert (table.X != x).nnz == 0
        assert set(table.layers) == set(layers)


def test_top_mean_matches_numpy_on_pooled_training_spots(train, held_out):
    panel = ht.pp.select_genes(train, n_genes=10, apply_to=held_out)
    pooled = np.vstack([dense(s["table"].X) for s in train])
    names = train[0]["table"].var_names
    assert isinstance(panel, pd.Index)
    assert list(panel) == ranked(pooled.mean(axis=0), names, 10)
    for sdata in [*train, held_out]:
        table = sdata["table"]
        assert table.var[KEY].dtype == bool
        assert list(table.var_names[table.var[KEY].to_numpy()]) == sorted(panel, key=list(names).index)
        assert table.uns[KEY]["params"] == {
            "flavor": "top_mean",
            "n_genes": 10,
            "layer": None,
            "trained_on": ["s0", "s1"],
        }


def test_apply_to_does_not_influence_the_panel(train):
    first = ht.pp.select_genes(train, n_genes=8, apply_to=section(2))
    second = ht.pp.select_genes(train, n_genes=8, apply_to=section(7))
    alone = ht.pp.select_genes(train, n_genes=8)
    with_held_out = ht.pp.select_genes([*train, section(2)], n_genes=8)
    assert list(first) == list(second) == list(alone)
    assert list(with_held_out) != list(alone)  # the held-out spots would change the choice


def test_top_var_and_layer(train):
    panel = ht.pp.select_genes(train, n_genes=5, flavor="top_var")
    pooled = np.vstack([dense(s["table"].X) for s in train])
    names = train[0]["table"].var_names
    assert list(panel) == ranked(pooled.var(axis=0), names, 5)

    counts = ht.pp.select_genes(train, n_genes=5, layer="counts", key_added="by_counts")
    pooled_counts = np.vstack([dense(s["table"].layers["counts"]) for s in train])
    assert list(counts) == ranked(pooled_counts.mean(axis=0), names, 5)
    assert train[0]["table"].uns["by_counts"]["params"]["layer"] == "counts"


def test_ties_broken_by_name():
    sdata = section(0, n_genes=6)
    table = sdata["table"]
    table.X = np.tile(np.array([1.0, 2.0, 2.0, 0.5, 2.0, 0.0], dtype=np.float32), (table.n_obs, 1))
    table.var_names = ["g_f", "g_c", "g_a", "g_d", "g_b", "g_e"]
    assert list(ht.pp.select_genes(sdata, n_genes=4)) == ["g_a", "g_b", "g_c", "g_f"]


def test_only_genes_shared_by_every_training_section_are_eligible():
    a, b = section(0, n_genes=12), section(1, n_genes=12)
    table = b["table"]
    b["table"].var_names = [*table.var_names[:-3], "other_1", "other_2", "other_3"]
    panel = ht.pp.select_genes([a, b], n_genes=9)
    assert set(panel) == set(a["table"].var_names[:9])
    before = snapshot([a, b])
    with pytest.raises(ValueError, match="Only 9 genes are present in every training section"):
        ht.pp.select_genes([a, b], n_genes=10, key_added="other")
    assert "other" not in a["table"].var.columns and "other" not in b["table"].uns
    assert [s["table"].var.shape for s in (a, b)] == [v.shape for v, *_ in before]


def test_list_flavor(train, held_out):
    genes = ["gene_007", "gene_002", "gene_019"]
    panel = ht.pp.select_genes(train, flavor="list", genes=genes, apply_to=[held_out])
    assert list(panel) == genes
    var = held_out["table"].var
    assert list(var.index[var[KEY]]) == ["gene_002", "gene_007", "gene_019"]
    assert held_out["table"].uns[KEY]["params"]["n_genes"] == 3
    assert held_out["table"].uns[KEY]["params"]["flavor"] == "list"


def test_rewrites_an_earlier_panel(train):
    ht.pp.select_genes(train, n_genes=20)
    ht.pp.select_genes(train, n_genes=3)
    assert int(train[0]["table"].var[KEY].sum()) == 3
    assert train[0]["table"].uns[KEY]["params"]["n_genes"] == 3


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"flavor": "highly_variable"},
            ValueError,
            r"Unknown flavor 'highly_variable'.*'top_mean', 'top_var'",
        ),
        ({"flavor": "list"}, ValueError, "`flavor='list'` needs `genes`"),
        ({"flavor": "list", "genes": []}, ValueError, "`genes` is empty"),
        ({"flavor": "list", "genes": "gene_001"}, TypeError, "not one string"),
        ({"flavor": "list", "genes": ["gene_001", "gene_001"]}, ValueError, "more than once.*'gene_001'"),
        (
            {"flavor": "list", "genes": ["gene_001", "ERBB2", "GNAS"]},
            KeyError,
            r"2 of the 3 genes are not in every training section: 'ERBB2', 'GNAS'",
        ),
        ({"genes": ["gene_001"]}, ValueError, r"`genes` is only used by `flavor='list'`"),
        ({"flavor": "top_var", "genes": ["gene_001"]}, ValueError, "only used by"),
        ({"n_genes": 0}, ValueError, "`n_genes` must be at least 1, got 0"),
        ({"n_genes": 2.5}, TypeError, "`n_genes` must be an integer"),
        ({"n_genes": 31}, ValueError, "Only 30 genes are present in every training section"),
        ({"table_key": "expression"}, KeyError, r"No table 'expression'.*tables: \['table'\]"),
        (
            {"layer": "raw"},
            KeyError,
            r"No layer 'raw' in table 'table' of section 's0'; layers: \['counts'\]",
        ),
    ],
)
def test_bad_input_leaves_data_unchanged(train, held_out, kwargs, error, match):
    before = snapshot([*train, held_out])
    with pytest.raises(error, match=match):
        ht.pp.select_genes(train, apply_to=held_out, **{"n_genes": 5, **kwargs})
    assert_unchanged([*train, held_out], before)


def test_empty_or_wrong_sections(train):
    with pytest.raises(ValueError, match="`sdatas` is empty"):
        ht.pp.select_genes([])
    with pytest.raises(TypeError, match="`sdatas` must be a SpatialData"):
        ht.pp.select_genes(train[0]["table"])
    before = snapshot(train)
    with pytest.raises(TypeError, match=r"`apply_to\[0\]` must be a SpatialData"):
        ht.pp.select_genes(train, apply_to=[train[0]["table"]])
    assert_unchanged(train, before)


def test_apply_to_section_missing_panel_genes_fails_before_writing(train):
    other = section(3, n_genes=12, sample="held")
    before = snapshot([*train, other])
    with pytest.raises(
        KeyError, match=r"Section 'held' of `apply_to` lacks 3 of the 15 panel genes: 'gene_01"
    ):
        ht.pp.select_genes(train, flavor="list", genes=[f"gene_{i:03d}" for i in range(15)], apply_to=other)
    assert_unchanged([*train, other], before)


def test_missing_layer_in_second_training_section(train, held_out):
    train[0]["table"].layers["extra"] = train[0]["table"].X.copy()
    before = snapshot([*train, held_out])
    with pytest.raises(KeyError, match=r"No layer 'extra' in table 'table' of section 's1'"):
        ht.pp.select_genes(train, n_genes=5, layer="extra", apply_to=held_out)
    assert_unchanged([*train, held_out], before)


def test_logs_what_was_added(train, caplog):
    with caplog.at_level("INFO", logger="hist2st_tk"):
        ht.pp.select_genes(train, n_genes=4)
    assert "added table.var['hist2st_genes'] of section 's0': 4 of 30 genes True" in caplog.text
    assert "added table.uns['hist2st_genes'] of section 's1'" in caplog.text


@pytest.mark.real_data
def test_her2st_top250mean_on_patient_c_applied_to_b4(her2st):
    from spatialdata import SpatialData

    def light_copy(name: str) -> SpatialData:
        # the fixture's sections are shared by the session: mark copies of their tables only
        sdata = her2st(name)
        shapes = {key: sdata.shapes[key] for key in sdata.shapes}
        return SpatialData(shapes=shapes, tables={"table": sdata["table"].copy()})

    train = [light_copy(f"C{i}") for i in range(2, 7)]
    b4 = light_copy("B4")
    panel = ht.pp.select_genes(train, n_genes=250, apply_to=b4)
    assert len(panel) == 250 and panel.is_unique
    assert int(b4["table"].var[KEY].sum()) == 250
    assert {"ACTB", "ERBB2", "GAPDH"} <= set(panel)  # HER2+ tumour: ERBB2 is among the most expressed
    assert b4["table"].uns[KEY]["params"]["trained_on"] == ["C2", "C3", "C4", "C5", "C6"]
    c_spots = np.vstack([train_section["table"][:, panel[:3]].X.toarray() for train_section in train])
    means = c_spots.mean(axis=0)
    assert means[0] >= means[1] >= means[2]
