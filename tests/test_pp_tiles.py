"""ht.pp.tile_tissue: a grid of tiles over the tissue, usable as spots by the rest of the toolkit."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import hist2st_tk as ht
from hist2st_tk._sdata import image_levels


def slide_like(*, white: bool = False, mpp: float = 1.0):
    """A synthetic section without its spots and table (as an H&E-only slide), 1,000 px at ``mpp`` 1."""
    sdata = ht.datasets.synthetic(n_spots=64, n_genes=4, mpp=mpp)
    del sdata.tables["table"]
    del sdata.shapes["synthetic_spots"]
    if white:
        from spatialdata.models import Image2DModel

        blank = np.full((3, 600, 600), 250, dtype=np.uint8)
        sdata.images["synthetic_he"] = Image2DModel.parse(blank, dims=("c", "y", "x"))
    return sdata


def test_tiles_cover_the_tissue_as_spots():
    sdata = slide_like()
    ht.pp.tile_tissue(sdata, tile_um=100, patient="P1", mask_mpp=4)

    table, tiles = sdata["table"], sdata.shapes["synthetic_tiles"]
    # the 8 x 8 spot grid lies one 100 um pitch inside the 1,000 um image: tiles 1..8 in both directions
    assert table.n_obs == 64 and table.n_vars == 0
    assert table.obs["array_x"].min() == 1 and table.obs["array_x"].max() == 8
    assert list(tiles.index) == list(table.obs["spot_id"]) == list(table.obs_names)
    assert tiles.index[0] == "tile_1_1"
    np.testing.assert_allclose(tiles["radius"], 50.0)
    centres = np.column_stack([tiles.geometry.x, tiles.geometry.y])
    expected = np.column_stack([table.obs["array_x"], table.obs["array_y"]]) * 100 + 50
    np.testing.assert_allclose(centres, expected)
    np.testing.assert_allclose(table.obsm["spatial"], expected)
    assert (table.obs["tissue_fraction"] >= 0.5).all()
    assert set(table.obs["patient"]) == {"P1"} and set(table.obs["sample"]) == {"synthetic"}
    from spatialdata.models import get_table_keys

    assert get_table_keys(table)[:2] == ("synthetic_tiles", "region")
    params = sdata.attrs["hist2st_tk"]["tiles"]["table"]
    assert params["tile_px"] == 100 and params["mpp_source"] == "user" and params["n_tiles"] == 64


def test_tiles_work_as_spots_for_features():
    sdata = slide_like(mpp=2.0)
    ht.pp.tile_tissue(sdata, tile_um=100, mask_mpp=4)
    ht.pp.image_features(sdata, encoder="fft", patch_um=100, progress=False)
    assert sdata["table"].obsm["X_fft"].shape[0] == sdata["table"].n_obs == 64
    assert sdata.shapes["synthetic_tiles_patches_100um"]["padded"].sum() == 0


def test_overlapping_stride_and_tissue_threshold():
    touching, overlapping, strict = slide_like(), slide_like(), slide_like()
    ht.pp.tile_tissue(touching, tile_um=100, mask_mpp=4)
    ht.pp.tile_tissue(overlapping, tile_um=100, stride_um=50, mask_mpp=4)
    ht.pp.tile_tissue(strict, tile_um=100, stride_um=50, min_tissue=1.0, mask_mpp=4)
    n_touching, n_overlap, n_strict = (s["table"].n_obs for s in (touching, overlapping, strict))
    assert n_overlap > 3 * n_touching  # about four times as many tiles at half the stride
    assert 0 < n_strict < n_overlap
    assert (strict["table"].obs["tissue_fraction"] == 1.0).all()


def test_stored_tissue_mask_is_used():
    sdata = slide_like()
    ht.pp.tissue_mask(sdata, target_mpp=4)
    from spatialdata.models import Labels2DModel
    from spatialdata.transformations import get_transformation

    old = sdata.labels["synthetic_tissue"]
    mask = np.asarray(image_levels(old)[0].values).copy()
    mask[:, : mask.shape[1] // 2] = 0  # no tissue in the left half
    sdata.labels["synthetic_tissue"] = Labels2DModel.parse(
        mask, dims=("y", "x"), transformations=get_transformation(old, get_all=True)
    )
    ht.pp.tile_tissue(sdata, tile_um=100)
    assert sdata["table"].n_obs == 32
    assert (sdata["table"].obsm["spatial"][:, 0] > 500).all()


def test_no_tissue_warns_and_writes_an_empty_table(caplog):
    sdata = slide_like(white=True)
    with caplog.at_level(logging.WARNING, logger="hist2st_tk"):
        ht.pp.tile_tissue(sdata, tile_um=100, mask_mpp=4)
    assert "No tile of image 'synthetic_he' has a tissue fraction" in caplog.text
    assert sdata["table"].n_obs == 0 and "synthetic_tiles" not in sdata.shapes


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"tile_um": -5}, ValueError, "`tile_um` must be a positive"),
        ({"tile_um": "big"}, TypeError, "`tile_um` must be a positive number"),
        ({"stride_um": 0}, ValueError, "`stride_um` must be a positive"),
        ({"min_tissue": 1.5}, ValueError, r"`min_tissue` is a fraction of the tile, in \[0, 1\]"),
        ({"mask_mpp": 0}, ValueError, "`mask_mpp` must be a positive"),
        ({"tile_um": 5000}, ValueError, "do not fit in the 1000 x 1000 px image"),
        ({"image_key": "other_he"}, KeyError, "No image 'other_he'"),
    ],
)
def test_bad_input_is_refused_and_nothing_written(kwargs, error, match):
    sdata = slide_like()
    with pytest.raises(error, match=match):
        ht.pp.tile_tissue(sdata, **kwargs)
    assert not sdata.tables and not sdata.shapes and "tiles" not in sdata.attrs["hist2st_tk"]


def test_existing_table_or_unknown_mpp_is_refused():
    sdata = slide_like()
    ht.pp.tile_tissue(sdata, tile_um=100, mask_mpp=4)
    with pytest.raises(ValueError, match=r"already has shapes\['synthetic_tiles'\]; delete it first"):
        ht.pp.tile_tissue(sdata, tile_um=50, mask_mpp=4)
    assert sdata["table"].n_obs == 64
    del sdata.attrs["hist2st_tk"]["mpp"]
    del sdata.tables["table"], sdata.shapes["synthetic_tiles"]
    with pytest.raises(KeyError, match="microns per pixel of image 'synthetic_he' is unknown"):
        ht.pp.tile_tissue(sdata)
