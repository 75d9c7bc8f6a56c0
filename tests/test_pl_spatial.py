from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

import hist2st_tk as ht


def read(st_files):
    paths = st_files()
    return ht.io.read_st(paths["counts"], paths["spots"], paths["image"], sample="S1")


def test_spatial_draws_one_panel_per_key(st_files, tmp_path):
    sdata = read(st_files)
    table = sdata.tables["table"]
    table.obs["group"] = np.where(np.arange(table.n_obs) % 2, "a", "b")
    table.obs.loc[table.obs_names[:3], "group"] = None
    fig = ht.pl.spatial(sdata, ["ERBB2", "group"], layer="counts", save=tmp_path / "f.png")
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["ERBB2 (counts)", "group"]
    # continuous panel: one circle per spot, coloured by the counts of ERBB2
    spots_collection = axes[0].collections[0]
    np.testing.assert_allclose(
        np.sort(spots_collection.get_array()), np.sort(table[:, "ERBB2"].layers["counts"].toarray().ravel())
    )
    # categorical panel: a legend entry per category, spots without a value drawn as outlines
    assert [t.get_text() for t in axes[1].get_legend().get_texts()] == ["a", "b", "no value"]
    assert len(axes[1].collections[0].get_paths()) == table.n_obs - 3
    assert (tmp_path / "f.png").stat().st_size > 1000
    plt.close(fig)


def test_spatial_matches_values_to_spots_by_id_not_order(st_files):
    sdata = read(st_files)
    table = sdata.tables["table"]
    sdata.tables["table"] = table[::-1].copy()
    fig = ht.pl.spatial(sdata, "ERBB2", layer="counts", crop=False)
    ax = fig.axes[0]
    spots = sdata.shapes["S1_spots"]
    drawn = ax.collections[0].get_array()
    expected = table[spots.index, "ERBB2"].layers["counts"].toarray().ravel()
    np.testing.assert_allclose(drawn, expected)
    plt.close(fig)


def test_spatial_bad_input(st_files):
    sdata = read(st_files)
    with pytest.raises(KeyError, match="'NOPE' is neither an obs column nor a gene.*genes e.g."):
        ht.pl.spatial(sdata, "NOPE")
    with pytest.raises(KeyError, match="No layer 'predicted'.*layers: \\['counts'\\]"):
        ht.pl.spatial(sdata, "ERBB2", layer="predicted")
    with pytest.raises(KeyError, match="No table 'other'"):
        ht.pl.spatial(sdata, "ERBB2", table_key="other")
    with pytest.raises(ValueError, match="at least one gene"):
        ht.pl.spatial(sdata, [])
    plt.close("all")
