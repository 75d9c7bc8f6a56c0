from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import hist2st_tk as ht
from hist2st_tk.pl._utils import BOOLEAN_COLOURS, cluster_palette


def read(st_files):
    paths = st_files()
    return ht.io.read_st(paths["counts"], paths["spots"], paths["image"], sample="S1")


def scale_bars(ax) -> list:
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    return [a for a in ax.artists if isinstance(a, AnchoredSizeBar)]


def bar_label_and_length(ax) -> tuple[str, float]:
    """The text of the panel's one scale bar and its length in data units (full-resolution pixels)."""
    (bar,) = scale_bars(ax)
    return bar.txt_label.get_text(), bar.size_bar.get_children()[0].get_width()


def colorbar_label(ax) -> str:
    return ax.collections[0].colorbar.ax.get_ylabel()


def face_colours(ax) -> set[str]:
    from matplotlib.colors import to_hex

    return {to_hex(c[:3]) for c in ax.collections[0].get_facecolors()}


def test_spatial_draws_one_panel_per_key(st_files, tmp_path):
    sdata = read(st_files)
    table = sdata.tables["table"]
    table.obs["group"] = np.where(np.arange(table.n_obs) % 2, "a", "b")
    table.obs.loc[table.obs_names[:3], "group"] = None
    fig = ht.pl.spatial(sdata, ["ERBB2", "group"], layer="counts", save=tmp_path / "f.png")
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["ERBB2 (counts)", "group"]
    assert colorbar_label(axes[0]) == "counts"
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


def test_spatial_titles_and_colour_bars_in_words(st_files):
    sdata = read(st_files)
    table = sdata.tables["table"]
    table.obs["tumor_score"] = np.linspace(0.1, 0.6, table.n_obs)
    table.obs["predicted_ridge_novelty"] = np.linspace(0.2, 0.9, table.n_obs)
    table.obs["latent_colour"] = np.linspace(0, 1, table.n_obs)
    table.obs["ERBB2_measured_z_score"] = np.linspace(-2, 2, table.n_obs)  # as the demo writes them
    keys = ["ERBB2", "tumor_score", "predicted_ridge_novelty", "latent_colour", "ERBB2_measured_z_score"]
    fig = ht.pl.spatial(sdata, keys, units={"latent_colour": "haematoxylin fraction"})
    axes = fig.axes[: len(keys)]
    assert [ax.get_title() for ax in axes] == [
        "ERBB2 measured",
        "tumor score",
        "novelty",
        "latent colour",
        "ERBB2 measured (z-score)",
    ]
    assert [colorbar_label(ax) for ax in axes] == [
        "log1p normalised counts",
        "tumor probability",
        "novelty (quantile of training sections)",
        "haematoxylin fraction",
        "z-score",
    ]
    # probabilities and novelties on the fixed scale 0-1, z-scores on -3 to 3, other values on their range
    assert [ax.collections[0].get_clim() for ax in axes[1:3]] == [(0.0, 1.0), (0.0, 1.0)]
    assert axes[4].collections[0].get_clim() == (-3.0, 3.0)
    assert axes[0].collections[0].get_clim()[1] == pytest.approx(table[:, "ERBB2"].X.max())
    plt.close(fig)


def test_spatial_scale_bar(st_files, caplog):
    sdata = read(st_files)  # 5 um per pixel (the 200 um grid is 40 px)
    fig = ht.pl.spatial(sdata, ["ERBB2", "ACTB"])
    # the crop spans 280 px = 1400 um: a round fifth of it is 200 um = 40 px
    assert [bar_label_and_length(ax) for ax in fig.axes[:2]] == [("200 µm", 40.0), ("200 µm", 40.0)]
    fig = ht.pl.spatial(sdata, "ERBB2", scale_bar=1500, crop=False)
    assert bar_label_and_length(fig.axes[0]) == ("1.5 mm", 300.0)
    fig = ht.pl.spatial(sdata, "ERBB2", scale_bar=False)
    assert scale_bars(fig.axes[0]) == []
    # without a known scale: no bar (logged), and a bar of a given length cannot be drawn
    del sdata.attrs["hist2st_tk"]["mpp"]["S1_he"]
    with caplog.at_level("INFO", logger="hist2st_tk"):
        fig = ht.pl.spatial(sdata, "ERBB2")
    assert scale_bars(fig.axes[0]) == []
    assert "no scale bar: the microns per pixel of image 'S1_he' are unknown" in caplog.text
    with pytest.raises(KeyError, match="microns per pixel of image 'S1_he' is unknown.*set_mpp"):
        ht.pl.spatial(sdata, "ERBB2", scale_bar=500)
    plt.close("all")


def test_spatial_clusters_and_labels_take_different_palettes(st_files):
    sdata = read(st_files)
    table = sdata.tables["table"]
    n = table.n_obs
    table.obs["leiden"] = pd.Categorical([str(i % 5) for i in range(n)])
    table.obs["region_label"] = pd.Categorical(
        np.array(["adipose", "breast glands", "cancer", "immune", "unknown"])[np.arange(n) % 5]
    )
    table.obs["tumor"] = pd.array(np.arange(n) % 2 == 0, dtype="boolean")
    table.obs["annotation"] = table.obs["leiden"].astype(str)
    fig = ht.pl.spatial(sdata, ["leiden", "region_label", "tumor", "annotation"], labels="annotation")
    leiden, regions, tumor, annotation = fig.axes[:4]
    assert face_colours(leiden) == set(cluster_palette(5))
    # a cluster never shares its colour with a label: Leiden 2 is not the colour of "cancer"
    assert face_colours(leiden).isdisjoint(face_colours(regions) | face_colours(tumor))
    assert face_colours(tumor) == set(BOOLEAN_COLOURS.values())
    # the labels' tumor region is red like tumor=True, its unknown grey
    legend = {
        t.get_text(): h
        for t, h in zip(regions.get_legend().get_texts(), regions.get_legend().legend_handles, strict=True)
    }
    from matplotlib.colors import to_hex

    assert to_hex(legend["cancer"].get_facecolor()[0][:3]) == BOOLEAN_COLOURS[True]
    # the same categories, passed as `labels`, take the label palette
    assert face_colours(annotation).isdisjoint(face_colours(leiden))
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
    with pytest.raises(
        ValueError, match=r"`labels` names \['tumor'\], which are not among `color` \['ERBB2'\]"
    ):
        ht.pl.spatial(sdata, "ERBB2", labels="tumor")
    with pytest.raises(ValueError, match=r"`units` names \['GNAS'\], which are not among `color`"):
        ht.pl.spatial(sdata, "ERBB2", units={"GNAS": "counts"})
    with pytest.raises(TypeError, match=r"`units` must map keys to labels \(strings\); 'ERBB2' maps to 1\."):
        ht.pl.spatial(sdata, "ERBB2", units={"ERBB2": 1})
    with pytest.raises(ValueError, match="`scale_bar` must be a positive length in µm, got -100"):
        ht.pl.spatial(sdata, "ERBB2", scale_bar=-100)
    with pytest.raises(TypeError, match="`scale_bar` must be True, False or a length in µm, got a str"):
        ht.pl.spatial(sdata, "ERBB2", scale_bar="1 mm")
    assert plt.get_fignums() == []
    plt.close("all")


def test_scale_bar_of_a_downsampled_image():
    """An overview level is drawn stretched to full-resolution pixels: the bar is um / mpp long in any case."""
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    sdata = ht.datasets.synthetic(n_spots=16, n_genes=4, seed=0, mpp=5.0)  # 120 x 120 px
    image = sdata.images["synthetic_he"]
    sdata.images["synthetic_he"] = Image2DModel.parse(
        image.data,
        dims=("c", "y", "x"),
        scale_factors=[2],
        transformations=get_transformation(image, get_all=True),
    )
    drawn = {}
    for max_image_px in (120, 60):  # full resolution, then the level halved
        fig = ht.pl.spatial(sdata, "gene_000", max_image_px=max_image_px, crop=False, scale_bar=200)
        ax = fig.axes[0]
        drawn[max_image_px] = ax.images[0].get_array().shape[:2]
        assert ax.images[0].get_extent() == [0, 120, 120, 0]
        assert bar_label_and_length(ax) == ("200 µm", 40.0)
        plt.close(fig)
    assert drawn == {120: (120, 120), 60: (60, 60)}
