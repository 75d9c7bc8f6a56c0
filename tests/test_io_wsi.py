"""ht.io.read_wsi: pyramidal TIFF slides read lazily, physical scale from the metadata, bad files refused."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

import hist2st_tk as ht
from hist2st_tk._image import ImageReader, UnreadableImageError
from hist2st_tk._sdata import image_levels
from hist2st_tk.bench._wsi import write_slide


@pytest.fixture(scope="module")
def he_rgb() -> np.ndarray:
    """The 2,000 x 2,000 px H&E-like image of a synthetic section (0.5 um/px)."""
    sdata = ht.datasets.synthetic(n_spots=64, n_genes=4, mpp=0.5, seed=3)
    return np.asarray(image_levels(sdata.images["synthetic_he"])[0].values).transpose(1, 2, 0)


def corrupt_tile(path, index: int) -> None:
    """Overwrite the bytes of tile ``index`` of the first page with garbage."""
    with tifffile.TiffFile(path) as tif:
        offset, size = tif.pages[0].dataoffsets[index], tif.pages[0].databytecounts[index]
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write((bytes(range(256)) * (size // 256 + 1))[:size])


def test_read_wsi_levels_pixels_and_mpp(tmp_path, he_rgb):
    path = write_slide(tmp_path / "slide_01.tiff", he_rgb, mpp=0.5, compression="zlib", n_levels=3)
    sdata = ht.io.read_wsi(path)

    assert list(sdata.images) == ["slide_01_he"]
    assert ht.io.get_mpp(sdata) == (0.5, "slide_metadata")
    levels = image_levels(sdata.images["slide_01_he"])
    assert [lv.shape for lv in levels] == [(3, 2000, 2000), (3, 1000, 1000), (3, 500, 500)]
    # lazy, in chunks no larger than 1024 px
    assert all(hasattr(lv.data, "dask") and max(lv.data.chunksize[1:]) <= 1024 for lv in levels)
    # lossless file: the pixels are the image's, in (c, y, x)
    np.testing.assert_array_equal(
        levels[0].data[:, 900:1300, 100:600].compute(), he_rgb[900:1300, 100:600].transpose(2, 0, 1)
    )
    from spatialdata.transformations import get_transformation

    scale = get_transformation(sdata.images["slide_01_he"]["scale2"]["image"]).transformations[0]
    np.testing.assert_allclose(scale.scale, [4.0, 4.0])
    record = sdata.attrs["hist2st_tk"]["slide"]["slide_01_he"]
    assert record["path"] == str(path.resolve())
    assert record["level_shapes"] == [[2000, 2000], [1000, 1000], [500, 500]]


def test_read_wsi_user_mpp_and_sample(tmp_path, he_rgb):
    path = write_slide(tmp_path / "case.ome.tiff", he_rgb[:1024, :1024], mpp=None)
    assert list(ht.io.read_wsi(path, mpp=0.25).images) == ["case_he"]  # ".ome" is part of the extension
    sdata = ht.io.read_wsi(path, mpp=0.25, sample="P7")
    assert ht.io.get_mpp(sdata, "P7_he") == (0.25, "user")


def test_read_wsi_without_mpp_says_how_to_fix(tmp_path, he_rgb):
    path = write_slide(tmp_path / "nompp.tiff", he_rgb[:1024, :1024], mpp=None)
    with pytest.raises(ValueError, match=r"does not record its microns per pixel.*Pass `mpp=`"):
        ht.io.read_wsi(path)
    with pytest.raises(ValueError, match="positive, finite number"):
        ht.io.read_wsi(path, mpp=-1)


def test_read_wsi_refuses_what_is_not_an_rgb_slide(tmp_path):
    with pytest.raises(FileNotFoundError, match="slide file does not exist"):
        ht.io.read_wsi(tmp_path / "missing.svs")
    text = tmp_path / "notes.svs"
    text.write_text("not a slide")
    with pytest.raises(ValueError, match=r"Cannot read .*notes\.svs.* as a whole-slide image"):
        ht.io.read_wsi(text)
    grey = tmp_path / "grey.tiff"
    tifffile.imwrite(
        grey,
        np.zeros((512, 512), dtype=np.uint8),
        tile=(256, 256),
        resolution=(2e4, 2e4),
        resolutionunit="CENTIMETER",
    )
    with pytest.raises(ValueError, match="is not 8-bit RGB"):
        ht.io.read_wsi(grey)
    with pytest.raises(ValueError, match="cannot name SpatialData elements"):
        ht.io.read_wsi(text, sample="a b")


def test_corrupted_tile_costs_only_the_patches_touching_it(tmp_path, he_rgb):
    path = write_slide(tmp_path / "broken.tiff", he_rgb, mpp=0.5, compression="zlib", n_levels=1)
    corrupt_tile(path, 8 * 2 + 2)  # 256 px tiles, 8 per row: pixels y, x in [512, 768)
    level = image_levels(ht.io.read_wsi(path).images["broken_he"])[0]

    reader = ImageReader(level).load()  # the whole level cannot be decoded: it falls back to chunk reads
    assert not reader.in_memory
    np.testing.assert_array_equal(reader.crop(100, 100, 300), he_rgb[100:400, 100:400])
    np.testing.assert_array_equal(
        reader.crop(800, 500, 200), he_rgb[500:700, 800:1000]
    )  # same chunk, good tile
    with pytest.raises(UnreadableImageError, match="corrupted part of the image file"):
        reader.crop(600, 600, 50)


def write_rgb_tiff(path, rgb: np.ndarray, *, mpp_x: float, mpp_y: float):
    """A one-level tiled RGB TIFF whose resolution tags give ``mpp_x`` and ``mpp_y`` microns per pixel."""
    tifffile.imwrite(
        path,
        rgb,
        photometric="rgb",
        tile=(256, 256),
        resolution=(1e4 / mpp_x, 1e4 / mpp_y),  # pixels per centimetre
        resolutionunit="CENTIMETER",
    )
    return path


def test_read_wsi_refuses_non_square_pixels_unless_mpp_is_given(tmp_path, he_rgb):
    path = write_rgb_tiff(tmp_path / "aniso.tiff", he_rgb[:512, :512], mpp_x=0.5, mpp_y=2.0)
    with pytest.raises(
        ValueError,
        match=r"The slide '.*aniso\.tiff' records non-square pixels: 0\.5 um per pixel in x and 2 um in y\. "
        r".*pass it explicitly as `mpp=`",
    ):
        ht.io.read_wsi(path)
    assert ht.io.get_mpp(ht.io.read_wsi(path, mpp=0.5)) == (0.5, "user")


@pytest.mark.parametrize(("mpp_x", "mpp_y"), [(0.25, 0.25), (0.5, 0.502)])
def test_read_wsi_square_pixels_within_one_percent_use_their_mean(tmp_path, he_rgb, mpp_x, mpp_y):
    path = write_rgb_tiff(tmp_path / "square.tiff", he_rgb[:512, :512], mpp_x=mpp_x, mpp_y=mpp_y)
    mpp, source = ht.io.get_mpp(ht.io.read_wsi(path))
    assert source == "slide_metadata" and mpp == pytest.approx((mpp_x + mpp_y) / 2)
