"""Checkpoints of ht.tl.predict_slide: tied to the pixels, each batch to its tiles, damaged files handled."""

from __future__ import annotations

import logging
import os
import shutil

import dask.array as da
import numpy as np
import pandas as pd
import pytest

import hist2st_tk as ht
from hist2st_tk.tl import _checkpoint

TILE_UM = 100.0  # the synthetic sections' spot pitch: one tile per spot
BATCH = 5  # 16 tiles: 4 batches


@pytest.fixture(scope="module")
def model(fft_model):
    return fft_model


@pytest.fixture(scope="module")
def slides(tmp_path_factory, write_synthetic_slide):
    """Two slide files of 16 tiles each, with the same tile ids."""
    folder = tmp_path_factory.mktemp("slides")
    paths = {}
    for seed in (1, 2):
        paths[f"s{seed}"] = write_synthetic_slide(folder / f"s{seed}.tiff", seed)
    return paths


def tiled(path):
    sdata = ht.io.read_wsi(path, sample="slide")  # both slides' elements are named alike
    ht.pp.tile_tissue(sdata, tile_um=TILE_UM)
    return sdata


def section(seed):
    """An in-memory synthetic section; every seed has the same name, size, mpp and spots."""
    return ht.datasets.synthetic(n_spots=16, n_genes=4, mpp=0.5, seed=seed)


@pytest.fixture
def finished(slides, model, tmp_path):
    """A checkpoint of all 4 batches of slide s1, and its predictions."""
    checkpoint = tmp_path / "chunks"
    predicted = ht.tl.predict_slide(tiled(slides["s1"]), model, batch_tiles=BATCH, checkpoint_dir=checkpoint)
    return checkpoint, predicted


def resumed(path, model, checkpoint, caplog) -> tuple[pd.DataFrame, int, str]:
    """Predictions from the checkpoint, how many batches were loaded from it, and the warnings."""
    sdata = tiled(path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hist2st_tk"):
        predicted = ht.tl.predict_slide(sdata, model, batch_tiles=BATCH, checkpoint_dir=checkpoint)
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    return predicted, sdata["table"].uns["predict_slide"]["n_resumed"], warnings


def fingerprint(sdata) -> str:
    return _checkpoint.fingerprint(sdata, sdata["table"], {"X_fft": {"encoder": "fft"}}, BATCH)


# -- 1. the checkpoint is tied to the pixels --------------------------------------------------------


def test_in_memory_section_with_other_pixels_does_not_reuse_the_checkpoint(model, tmp_path):
    checkpoint = tmp_path / "chunks"
    a, b = section(1), section(2)
    predicted_a = ht.tl.predict_slide(a, model, batch_tiles=BATCH, checkpoint_dir=checkpoint)
    assert not np.allclose(ht.tl.predict_slide(section(2), model).to_numpy(), predicted_a.to_numpy())
    with pytest.raises(FileExistsError, match="holds other content"):
        ht.tl.predict_slide(b, model, batch_tiles=BATCH, checkpoint_dir=checkpoint)
    assert "predict_slide" not in b["table"].uns
    again = ht.tl.predict_slide(section(1), model, batch_tiles=BATCH, checkpoint_dir=checkpoint)
    pd.testing.assert_frame_equal(again, predicted_a)  # the same pixels resume


def test_fingerprint_of_a_large_image_sees_pixels_under_the_tiles(monkeypatch):
    monkeypatch.setattr(_checkpoint, "_HASHED_WHOLE_BYTES", 0)  # as if the section were a whole slide
    a, same = section(1), section(1)
    assert fingerprint(a) == fingerprint(same)
    assert fingerprint(a) != fingerprint(section(2))
    key = "synthetic_he"
    pixels = np.asarray(a.images[key].values).copy()
    pixels[:, 290:310, 290:310] = 0  # a small change at the centre of the first spot (300, 300)
    a.images[key] = a.images[key].copy(data=da.from_array(pixels))
    assert fingerprint(a) != fingerprint(same)


class _Recording:
    """A huge lazy image that records how many pixels are read from it."""

    def __init__(self, shape):
        self.shape, self.dtype, self.ndim = shape, np.dtype(np.uint8), 3
        self.read = 0

    def __getitem__(self, key):
        region = np.zeros([len(range(*k.indices(n))) for k, n in zip(key, self.shape, strict=True)], np.uint8)
        self.read += region.size
        return region


def test_fingerprint_of_a_whole_slide_reads_only_small_windows():
    source = _Recording((3, 100_000, 100_000))
    level = da.from_array(source, chunks=(3, 1024, 1024), fancy=False)
    centres = np.column_stack([np.linspace(500, 99_500, 5000), np.linspace(700, 99_000, 5000)])
    windows = _checkpoint._pixel_windows(level, centres)
    assert windows == _checkpoint._pixel_windows(level, centres)  # fixed: the same windows every time
    assert 0 < len(windows) <= 32
    assert all(ys.stop - ys.start <= 64 and xs.stop - xs.start <= 64 for ys, xs in windows)
    digest = _checkpoint._pixel_digest(level, windows)
    assert source.read <= len(windows) * 3 * 1024**2  # at most one chunk per window
    assert digest == _checkpoint._pixel_digest(level, windows)


def test_fingerprint_of_a_small_image_covers_every_pixel():
    image = np.zeros((3, 1200, 1200), np.uint8)
    windows = _checkpoint._pixel_windows(image, np.zeros((0, 2)))
    covered = np.zeros(image.shape[1:], bool)
    for ys, xs in windows:
        covered[ys, xs] = True
    assert covered.all()
    changed = image.copy()
    changed[1, 1199, 0] = 1
    assert _checkpoint._pixel_digest(changed, windows) != _checkpoint._pixel_digest(image, windows)


def test_fingerprint_of_a_slide_file_follows_the_file(slides, tmp_path):
    path = shutil.copy(slides["s1"], tmp_path / "s1.tiff")
    before = fingerprint(tiled(path))
    assert fingerprint(tiled(path)) == before
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # rewritten, same pixels
    assert fingerprint(tiled(path)) != before


def test_fingerprint_of_a_zarr_store_follows_the_store(tmp_path):
    from spatialdata import read_zarr

    store = ht.io.write_zarr(section(1), tmp_path / "a.zarr")
    before = fingerprint(read_zarr(store))
    assert fingerprint(read_zarr(store)) == before
    image = store / "images" / "synthetic_he"
    metadata = next(p for p in image.rglob("*") if p.name in ("zarr.json", ".zarray", ".zattrs"))
    stat = os.stat(metadata)
    os.utime(metadata, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert fingerprint(read_zarr(store)) != before


# -- 2. each batch is tied to its tiles and its run -------------------------------------------------


def test_swapped_batch_files_are_computed_again(slides, model, finished, caplog):
    checkpoint, expected = finished
    first, second = checkpoint / "batch_00000.npz", checkpoint / "batch_00001.npz"
    first.rename(checkpoint / "swap")
    second.rename(first)
    (checkpoint / "swap").rename(second)

    predicted, n_resumed, warnings = resumed(slides["s1"], model, checkpoint, caplog)
    pd.testing.assert_frame_equal(predicted, expected)
    assert n_resumed == 2
    assert str(first) in warnings and str(second) in warnings
    assert "holds other tiles than batch 0 ('tile_" in warnings
    assert "computing it again" in warnings

    predicted, n_resumed, warnings = resumed(
        slides["s1"], model, checkpoint, caplog
    )  # the batches were rewritten
    pd.testing.assert_frame_equal(predicted, expected)
    assert n_resumed == 4 and warnings == ""


def test_batch_of_another_checkpoint_is_computed_again(slides, model, finished, tmp_path, caplog):
    checkpoint, expected = finished
    other = tmp_path / "other"
    ht.tl.predict_slide(tiled(slides["s2"]), model, batch_tiles=BATCH, checkpoint_dir=other)
    shutil.copy(other / "batch_00001.npz", checkpoint / "batch_00001.npz")  # the same tile ids

    predicted, n_resumed, warnings = resumed(slides["s1"], model, checkpoint, caplog)
    pd.testing.assert_frame_equal(predicted, expected)
    assert n_resumed == 3
    assert f"{checkpoint / 'batch_00001.npz'}" in warnings and "belongs to another run" in warnings


def test_batch_whose_features_do_not_match_its_tiles_is_computed_again(slides, model, finished, caplog):
    checkpoint, expected = finished
    path = checkpoint / "batch_00003.npz"
    with np.load(path) as stored:
        arrays = dict(stored)
    arrays["features/X_fft"] = arrays["features/X_fft"][:-1]  # one row lost
    with path.open("wb") as handle:
        np.savez(handle, **arrays)

    predicted, n_resumed, warnings = resumed(slides["s1"], model, checkpoint, caplog)
    pd.testing.assert_frame_equal(predicted, expected)
    assert n_resumed == 3
    assert f"The checkpoint batch {path} is inconsistent" in warnings


# -- 3. damaged files -------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_batch_file_is_computed_again(slides, model, finished, caplog, damage):
    checkpoint, expected = finished
    path = checkpoint / "batch_00002.npz"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00" * 100, "empty": b""}[damage])

    predicted, n_resumed, warnings = resumed(slides["s1"], model, checkpoint, caplog)
    pd.testing.assert_frame_equal(predicted, expected)
    assert n_resumed == 3
    assert f"The checkpoint batch {path} cannot be read (" in warnings
    assert "computing it again" in warnings

    predicted, n_resumed, warnings = resumed(
        slides["s1"], model, checkpoint, caplog
    )  # the file was written again
    pd.testing.assert_frame_equal(predicted, expected)
    assert n_resumed == 4 and warnings == ""


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"fingerprint": 3}', "\udcff"])
def test_corrupt_manifest_names_the_file(slides, model, finished, text):
    checkpoint, _ = finished
    manifest = checkpoint / "manifest.json"
    manifest.write_bytes(text.encode("utf-8", "surrogateescape"))
    sdata = tiled(slides["s1"])
    with pytest.raises(ValueError, match="is damaged") as error:
        ht.tl.predict_slide(sdata, model, batch_tiles=BATCH, checkpoint_dir=checkpoint)
    assert str(manifest) in str(error.value)
    assert f"delete the folder {str(checkpoint)!r} to start again" in str(error.value)
    assert sdata["table"].n_vars == 0
