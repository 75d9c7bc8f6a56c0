from __future__ import annotations

import gzip
import logging

import numpy as np
import pandas as pd
import pytest
import spatialdata as sd

import hist2st_tk as ht

PITCH_PX = 40  # grid step of the `st_files` fixture (conftest.py)


def read(paths, **kwargs):
    kwargs.setdefault("sample", "S1")
    return ht.io.read_st(paths["counts"], paths["spots"], paths["image"], **kwargs)


def test_read_st_builds_the_contract(st_files):
    paths = st_files()
    sdata = read(paths, patient="P1")
    assert set(sdata.images) == {"S1_he"}
    assert set(sdata.shapes) == {"S1_spots"}
    table = sdata.tables["table"]
    assert table.shape == (25, 4)
    assert table.obs["sample"].unique().tolist() == ["S1"]
    assert table.obs["patient"].unique().tolist() == ["P1"]
    # rows map to spots through the instance key, not by order
    matched = sd.match_table_to_element(sdata, "S1_spots", "table")
    assert list(matched.obs["spot_id"]) == list(sdata.shapes["S1_spots"].index)
    # counts kept raw; X is normalize_total(1e4) + log1p of them
    counts = pd.read_csv(paths["counts"], sep="\t", index_col=0).loc[table.obs_names]
    np.testing.assert_array_equal(table.layers["counts"].toarray(), counts.to_numpy())
    expected = np.log1p(counts.to_numpy() / counts.to_numpy().sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(table.X.toarray(), expected, rtol=1e-5)
    spots = pd.read_csv(paths["spots"], sep="\t")
    np.testing.assert_allclose(
        np.sort(table.obsm["spatial"], axis=0), np.sort(spots[["pixel_x", "pixel_y"]].to_numpy(), axis=0)
    )


def test_mpp_from_the_st_grid_and_spot_size(st_files):
    sdata = read(st_files())
    mpp, source = ht.io.get_mpp(sdata, "S1_he")
    assert source == "st_grid"
    assert mpp == pytest.approx(200 / PITCH_PX)
    # 100 um spot diameter
    assert (2 * sdata.shapes["S1_spots"]["radius"] * mpp).to_numpy() == pytest.approx(100.0)


def test_explicit_mpp_is_recorded_as_user(st_files):
    sdata = read(st_files(), mpp=2.0)
    assert ht.io.get_mpp(sdata) == (2.0, "user")
    assert sdata.shapes["S1_spots"]["radius"].iloc[0] == pytest.approx(25.0)


def test_image_is_lazy_rgb_and_multiscale_when_large(st_files):
    sdata = read(st_files())
    image = sdata.images["S1_he"]
    level = image["scale0"].ds["image"] if hasattr(image, "children") and image.children else image
    assert level.dtype == np.uint8
    assert list(level.coords["c"].values) == ["r", "g", "b"]
    assert hasattr(level.data, "dask")


def test_zarr_round_trip_keeps_keys_and_mpp(st_files, tmp_path):
    sdata = read(st_files())
    path = ht.io.write_zarr(sdata, tmp_path / "s1.zarr")
    back = sd.read_zarr(path)
    assert set(back.images) == set(sdata.images) and set(back.shapes) == set(sdata.shapes)
    assert ht.io.get_mpp(back) == ht.io.get_mpp(sdata)
    for attr in ("obs", "obsm", "layers", "uns"):
        assert set(getattr(back.tables["table"], attr).keys()) == set(
            getattr(sdata.tables["table"], attr).keys()
        )


def test_write_zarr_refuses_to_overwrite(st_files, tmp_path):
    sdata = read(st_files())
    path = ht.io.write_zarr(sdata, tmp_path / "s1.zarr")
    with pytest.raises(FileExistsError, match="already exists; pass `overwrite=True`"):
        ht.io.write_zarr(sdata, path)
    ht.io.write_zarr(sdata, path, overwrite=True)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".s1.zarr")]  # no staging left


def test_mismatched_spots_are_dropped_with_a_warning(st_files, caplog):
    paths = st_files()
    counts = pd.read_csv(paths["counts"], sep="\t", index_col=0)
    counts = pd.concat([counts.drop(index=["1x1", "2x1"]), counts.iloc[[0]].set_axis(["99x99"])])
    counts.to_csv(paths["counts"], sep="\t")
    with caplog.at_level(logging.WARNING, logger="hist2st_tk"):
        sdata = read(paths)
    assert sdata.tables["table"].n_obs == 23
    assert "2 spots have no counts row" in caplog.text and "'1x1'" in caplog.text
    assert "1 counts rows have no spot" in caplog.text and "'99x99'" in caplog.text


def test_unselected_spots_are_ignored(st_files):
    paths = st_files()
    spots = pd.read_csv(paths["spots"], sep="\t")
    spots.loc[:4, "selected"] = 0
    spots.to_csv(paths["spots"], sep="\t", index=False)
    assert read(paths).tables["table"].n_obs == 20


# --- bad input -------------------------------------------------------------------------------


def test_missing_files(st_files, tmp_path):
    paths = st_files()
    with pytest.raises(FileNotFoundError, match="counts file does not exist"):
        ht.io.read_st(tmp_path / "nope.tsv", paths["spots"], paths["image"], sample="S")
    with pytest.raises(FileNotFoundError, match="spots file does not exist"):
        ht.io.read_st(paths["counts"], tmp_path / "nope.tsv", paths["image"], sample="S")
    with pytest.raises(FileNotFoundError, match="H&E image file does not exist"):
        ht.io.read_st(paths["counts"], paths["spots"], tmp_path / "nope.jpg", sample="S")


def test_unreadable_files(st_files):
    paths = st_files()
    paths["image"].write_bytes(b"not an image")
    with pytest.raises(ValueError, match="Cannot read .* as an image"):
        read(paths)
    paths = st_files()
    paths["counts"].write_bytes(gzip.compress(b"\x00\xff\xfe garbage")[:10])
    with pytest.raises(ValueError, match="Cannot read the counts file"):
        read(paths)


def test_non_rgb_image(st_files):
    with pytest.raises(ValueError, match=r"is not RGB \(Pillow mode 'L'\)"):
        read(st_files(image_mode="L"))


def test_spots_file_without_pixel_columns(st_files):
    paths = st_files()
    pd.read_csv(paths["spots"], sep="\t").drop(columns=["pixel_x"]).to_csv(
        paths["spots"], sep="\t", index=False
    )
    with pytest.raises(ValueError, match=r"lacks columns \['pixel_x'\]"):
        read(paths)


def test_duplicated_spot_ids(st_files):
    paths = st_files()
    counts = pd.read_csv(paths["counts"], sep="\t", index_col=0)
    pd.concat([counts, counts.iloc[[3]]]).to_csv(paths["counts"], sep="\t")
    with pytest.raises(ValueError, match="Duplicated spot ids in the counts file .*'4x1'"):
        read(paths)
    paths = st_files()
    spots = pd.read_csv(paths["spots"], sep="\t")
    pd.concat([spots, spots.iloc[[0]]]).to_csv(paths["spots"], sep="\t", index=False)
    with pytest.raises(ValueError, match="Duplicated spot ids in the spots file .*'1x1'"):
        read(paths)


def test_files_of_different_sections(st_files):
    paths = st_files()
    counts = pd.read_csv(paths["counts"], sep="\t", index_col=0)
    counts.index = [f"{i}x0" for i in range(len(counts) - 3)] + list(counts.index[-3:])
    counts.to_csv(paths["counts"], sep="\t")
    with pytest.raises(ValueError, match="Only 3 of 25 spots have a counts row.*different sections"):
        read(paths)


def test_spots_outside_the_image(st_files):
    with pytest.raises(ValueError, match="spot centres lie outside the 280 x 280 px image"):
        read(st_files(shift_px=100.0))


def test_mpp_that_cannot_be_derived(st_files):
    paths = st_files(n=1)
    with pytest.raises(ValueError, match="Cannot derive microns per pixel.*Pass `mpp=`"):
        read(paths)
    assert ht.io.get_mpp(read(paths, mpp=1.0)) == (1.0, "user")


@pytest.mark.parametrize("mpp", [0, -1.0, float("nan")])
def test_invalid_mpp(st_files, mpp):
    with pytest.raises(ValueError, match="`mpp` must be a positive, finite number"):
        read(st_files(), mpp=mpp)


def test_get_and_set_mpp_errors(st_files):
    sdata = read(st_files())
    with pytest.raises(KeyError, match="No image 'other'"):
        ht.io.set_mpp(sdata, "other", 1.0)
    with pytest.raises(ValueError, match="Unknown mpp source 'guess'"):
        ht.io.set_mpp(sdata, "S1_he", 1.0, source="guess")
    with pytest.raises(TypeError, match="must be a positive number"):
        ht.io.set_mpp(sdata, "S1_he", "big")
    assert ht.io.get_mpp(sdata)[1] == "st_grid"  # failed calls changed nothing
    del sdata.attrs["hist2st_tk"]
    with pytest.raises(KeyError, match="microns per pixel of image 'S1_he' is unknown.*ht.io.set_mpp"):
        ht.io.get_mpp(sdata)


def test_sample_name_that_cannot_name_elements(st_files):
    with pytest.raises(ValueError, match="The sample name 'my sample' cannot name SpatialData elements"):
        read(st_files(), sample="my sample")


# --- damaged files: each error names the file and what is wrong in it ----------------------------


@pytest.mark.parametrize("which", ["counts", "spots"])
def test_empty_file_is_named(st_files, which):
    paths = st_files()
    paths[which].write_bytes(b"")
    with pytest.raises(ValueError, match=rf"The {which} file '.*{paths[which].name}' is empty\."):
        read(paths)


def _edit_counts(paths, spot: str, value) -> None:
    counts = pd.read_csv(paths["counts"], sep="\t", index_col=0).astype(float)
    counts.loc[spot, "GNAS"] = value
    counts.to_csv(paths["counts"], sep="\t")


def test_negative_counts_are_refused(st_files):
    paths = st_files()
    counts = pd.read_csv(paths["counts"], sep="\t", index_col=0)
    counts.loc["3x2"] = -5  # a whole row of -5
    counts.to_csv(paths["counts"], sep="\t")
    with pytest.raises(
        ValueError,
        match=r"counts file '.*counts\.tsv\.gz' has negative counts for 1 spot\(s\): '3x2'; .*non-negative",
    ):
        read(paths)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_counts_are_refused_at_read(st_files, value):
    paths = st_files()
    _edit_counts(paths, "2x4", value)
    _edit_counts(paths, "5x5", value)
    with pytest.raises(
        ValueError,
        match=r"counts file '.*counts\.tsv\.gz' has NaN or infinite counts for 2 spot\(s\): '2x4', '5x5'",
    ):
        read(paths)


def _edit_spots(paths, row: int, column: str, value) -> None:
    spots = pd.read_csv(paths["spots"], sep="\t").astype({column: object})
    spots.loc[row, column] = value
    spots.to_csv(paths["spots"], sep="\t", index=False)


def test_non_numeric_pixel_position_names_column_and_file(st_files):
    paths = st_files()
    _edit_spots(paths, 1, "pixel_x", "40px")
    with pytest.raises(
        ValueError,
        match=r"Column 'pixel_x' of the spots file '.*selection\.tsv' must hold finite numbers; it has '40px' \(line 3\)",
    ):
        read(paths)


def test_missing_pixel_position_is_refused(st_files):
    paths = st_files()
    _edit_spots(paths, 0, "pixel_y", np.nan)
    with pytest.raises(
        ValueError,
        match=r"Column 'pixel_y' of the spots file '.*selection\.tsv'.* it has an empty field \(line 2\)",
    ):
        read(paths)


def test_unselected_rows_are_not_checked(st_files):
    paths = st_files()
    _edit_spots(paths, 0, "pixel_x", "40px")
    _edit_spots(paths, 0, "selected", 0)
    assert read(paths).tables["table"].n_obs == 24


def test_fractional_grid_position_is_refused(st_files):
    paths = st_files()
    spots = pd.read_csv(paths["spots"], sep="\t").astype({"x": float})
    row = spots.index[(spots["x"] == 3) & (spots["y"] == 4)][0]
    spots.loc[row, "x"] = 3.5  # was truncated to the spot "3x4" before
    spots.to_csv(paths["spots"], sep="\t", index=False)
    counts = pd.read_csv(paths["counts"], sep="\t", index_col=0).rename(index={"3x4": "3.5x4"})
    counts.to_csv(paths["counts"], sep="\t")
    with pytest.raises(
        ValueError,
        match=rf"Column 'x' of the spots file '.*selection\.tsv' must hold whole array grid positions; "
        rf"it has 3\.5 \(line {row + 2}\), spot\(s\) '3\.5x4'",
    ):
        read(paths)


def test_failed_read_leaves_no_file(st_files):
    paths = st_files()
    _edit_counts(paths, "1x1", -1)
    before = sorted(paths["counts"].parent.iterdir())
    with pytest.raises(ValueError, match="negative counts"):
        read(paths)
    assert sorted(paths["counts"].parent.iterdir()) == before
