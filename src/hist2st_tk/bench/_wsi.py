"""``hist2st bench wsi``: whole-slide prediction in bounded memory, its speed against the bare encoder, and
its time against the tissue area, on a synthetic 100,000 x 100,000 px pyramidal slide made of real H&E."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ._report import write_report

#: Goals of the whole-slide issue: peak memory of a slide's run, and tiles/s against the bare encoder.
GOAL_RSS_MB = 2048.0
GOAL_RATIO = 0.8
#: The synthetic slide: edge in pixels, microns per pixel, edge of its file tiles, glass colour.
SLIDE_PX = 100_000
SLIDE_MPP = 0.5
FILE_TILE_PX = 512
GLASS_RGB = (243, 241, 246)
#: Edge of the real H&E texture repeated over the tissue regions (a power of two: the pyramid stays periodic).
TEXTURE_PX = 2048
#: Tissue regions start on multiples of this many pixels, so that 112 um tiles (224 px) and file tiles align.
REGION_GRID_PX = 3584
#: Top-left corners of the (up to four) square tissue regions, in units of ``REGION_GRID_PX``.
REGION_CORNERS = ((4, 4), (4, 16), (16, 4), (16, 16))
#: JPEG quality of the synthetic slide's tiles.
JPEG_QUALITY = 90
#: Pyramid levels are added (halving) until the smallest edge is below this.
SMALLEST_LEVEL_PX = 1024


def write_slide(
    path: str | Path,
    rgb: np.ndarray,
    *,
    mpp: float | None,
    tile: int = 256,
    compression: str = "jpeg",
    n_levels: int | None = None,
) -> Path:
    """Write an ``(h, w, 3)`` uint8 image as a tiled pyramidal TIFF that :func:`hist2st_tk.io.read_wsi` reads.

    Each level halves the previous one (2 x 2 block means); ``n_levels`` of them, or by default until the
    smaller edge is below 1,024 px. ``mpp`` goes into the resolution tags (``None`` writes none);
    ``compression`` is a tifffile codec name (``"jpeg"``, ``"zlib"`` ...). For tests, docs and benchmarks.
    """
    pyramid = [np.ascontiguousarray(rgb, dtype=np.uint8)]
    while (len(pyramid) < n_levels) if n_levels else min(pyramid[-1].shape[:2]) >= 2 * SMALLEST_LEVEL_PX:
        pyramid.append(_halve(pyramid[-1]))

    def tile_of(level: int, y: int, x: int) -> np.ndarray:
        return pyramid[level][y : y + tile, x : x + tile]

    shapes = [p.shape[:2] for p in pyramid]
    return _write_pyramid(path, shapes, tile_of, mpp=mpp, tile=tile, compression=compression)


def write_synthetic_slide(
    path: str | Path,
    texture: np.ndarray,
    *,
    n_regions: int,
    region_px: int,
    size_px: int = SLIDE_PX,
    mpp: float = SLIDE_MPP,
) -> Path:
    """A ``size_px`` square pyramidal JPEG TIFF: glass, with ``n_regions`` (1-4) square tissue regions of
    ``region_px`` that repeat ``texture`` (real H&E). Written tile by tile; memory stays small."""
    if not 1 <= n_regions <= len(REGION_CORNERS):
        msg = f"`n_regions` must be 1 to {len(REGION_CORNERS)}, got {n_regions}."
        raise ValueError(msg)
    textures = [texture]
    shapes = [(size_px, size_px)]
    while min(shapes[-1]) >= 2 * SMALLEST_LEVEL_PX:
        shapes.append((shapes[-1][0] // 2, shapes[-1][1] // 2))
        textures.append(_halve(textures[-1]))
    regions = [(cy * REGION_GRID_PX, cx * REGION_GRID_PX) for cy, cx in REGION_CORNERS[:n_regions]]

    def overlaps(level: int, y: int, x: int):
        """The parts (level pixels) of the tile at ``(y, x)`` covered by each region."""
        scale = 2**level
        h, w = min(FILE_TILE_PX, shapes[level][0] - y), min(FILE_TILE_PX, shapes[level][1] - x)
        for top, left in regions:
            y0, y1 = max(y, top // scale), min(y + h, (top + region_px) // scale)
            x0, x1 = max(x, left // scale), min(x + w, (left + region_px) // scale)
            if y0 < y1 and x0 < x1:
                yield y0, y1, x0, x1

    def tile_of(level: int, y: int, x: int) -> np.ndarray:
        h, w = min(FILE_TILE_PX, shapes[level][0] - y), min(FILE_TILE_PX, shapes[level][1] - x)
        out = np.empty((h, w, 3), dtype=np.uint8)
        out[:] = GLASS_RGB
        period = textures[level].shape[0]
        for y0, y1, x0, x1 in overlaps(level, y, x):
            rows, cols = np.arange(y0, y1) % period, np.arange(x0, x1) % period
            out[y0 - y : y1 - y, x0 - x : x1 - x] = textures[level][np.ix_(rows, cols)]
        return out

    def tile_key(level: int, y: int, x: int):
        """Tiles wholly of glass, or wholly inside a region at the same texture phase, are identical."""
        full = (y, y + FILE_TILE_PX, x, x + FILE_TILE_PX)
        if full[1] > shapes[level][0] or full[3] > shapes[level][1]:
            return None
        parts = list(overlaps(level, y, x))
        if not parts:
            return ("glass", level)
        period = textures[level].shape[0]
        return ("tissue", level, y % period, x % period) if parts == [full] else None

    return _write_pyramid(
        path, shapes, tile_of, mpp=mpp, tile=FILE_TILE_PX, compression="jpeg", tile_key=tile_key
    )


def _halve(rgb: np.ndarray) -> np.ndarray:
    height, width = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    blocks = rgb[:height, :width].reshape(height // 2, 2, width // 2, 2, 3).mean(axis=(1, 3))
    return np.rint(blocks).astype(np.uint8)


def _write_pyramid(
    path: str | Path,
    shapes: list[tuple[int, int]],
    tile_of: Callable[[int, int, int], np.ndarray],
    *,
    mpp: float | None,
    tile: int,
    compression: str,
    tile_key: Callable[[int, int, int], object] | None = None,
) -> Path:
    """A pyramidal TIFF (levels as SubIFDs of the first page) from ``tile_of(level, y, x)``, tile by tile.

    With ``tile_key`` (JPEG only), tiles with the same key are encoded once: a mostly empty 100,000 px
    slide is then written in about a minute instead of many.
    """
    import tifffile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.writing")
    encoded: dict[object, bytes] = {}

    def padded(level: int, y: int, x: int) -> np.ndarray:
        part = tile_of(level, y, x)
        if part.shape[:2] == (tile, tile):
            return part
        full = np.full((tile, tile, 3), 255, dtype=np.uint8)  # edge tiles are padded to full size
        full[: part.shape[0], : part.shape[1]] = part
        return full

    def encode(level: int, y: int, x: int) -> bytes:
        import imagecodecs

        key = tile_key(level, y, x)
        if key is None or key not in encoded:
            data = imagecodecs.jpeg8_encode(padded(level, y, x), level=JPEG_QUALITY)
            if key is None:
                return data
            encoded[key] = data
        return encoded[key]

    def tiles(level: int):
        height, width = shapes[level]
        for y in range(0, height, tile):
            for x in range(0, width, tile):
                yield padded(level, y, x) if tile_key is None else encode(level, y, x)

    if tile_key is not None and compression != "jpeg":
        msg = "`tile_key` reuses encoded JPEG tiles; it needs compression='jpeg'."
        raise ValueError(msg)
    options = {"tile": (tile, tile), "compression": compression, "photometric": "rgb", "dtype": np.uint8}
    resolution = {} if mpp is None else {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    try:
        with tifffile.TiffWriter(staging, bigtiff=True) as tif:
            tif.write(tiles(0), shape=(*shapes[0], 3), subifds=len(shapes) - 1, **resolution, **options)
            for level in range(1, len(shapes)):
                tif.write(tiles(level), shape=(*shapes[level], 3), subfiletype=1, **options)
        staging.replace(path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return path


def her2st_texture(
    section: str = "B4", *, data_dir: str | Path | None = None, size: int = TEXTURE_PX
) -> np.ndarray:
    """A ``size`` square crop of a HER2ST section's H&E, centred on the middle of its spots: real tissue."""
    from .. import datasets
    from .._sdata import image_levels

    sdata = datasets.her2st(section, data_dir=data_dir)
    centre = np.median(np.asarray(sdata["table"].obsm["spatial"]), axis=0).astype(int)
    level = image_levels(sdata.images[f"{section}_he"])[0]
    x0 = int(np.clip(centre[0] - size // 2, 0, level.shape[2] - size))
    y0 = int(np.clip(centre[1] - size // 2, 0, level.shape[1] - size))
    crop = np.asarray(level.data[:, y0 : y0 + size, x0 : x0 + size])
    return np.ascontiguousarray(crop.transpose(1, 2, 0))


def _cached_slides(cache: Path, areas: tuple[int, ...], region_tiles: int, tile_px: int, section, data_dir):
    """The synthetic slides (one per area multiple), written once into ``cache``."""
    region_px = region_tiles * tile_px
    paths = {area: cache / f"wsi_{SLIDE_PX}px_{area}x{region_px}px.tiff" for area in areas}
    missing = [area for area, path in paths.items() if not path.is_file()]
    if missing:
        texture = her2st_texture(section, data_dir=data_dir)
        for area in missing:
            start = time.perf_counter()
            write_synthetic_slide(paths[area], texture, n_regions=area, region_px=region_px)
            print(f"wrote {paths[area]} in {time.perf_counter() - start:.0f} s")
    return paths


def _fit_speed_model(model_dir: Path, *, encoder: str, tile_um: float) -> Path:
    """A small ridge predictor on synthetic lite0 features: its accuracy is irrelevant, its inputs are real."""
    from .. import datasets, pp, tl

    if not (model_dir / "model.json").is_file():
        train = datasets.synthetic(n_spots=64, n_genes=16, mpp=SLIDE_MPP, seed=0)
        pp.image_features(train, encoder=encoder, patch_um=tile_um, progress=False)
        model = tl.fit_predictor(train, method="ridge", genes=8, use_rep=f"X_{encoder}")
        model.save(model_dir, overwrite=True)
    return model_dir


def _measure(slide: str, model_dir: str, out_dir: str, options: dict, queue) -> None:
    """One slide through predict_cohort in a fresh process; puts its numbers (peak memory included) on ``queue``."""
    try:
        from ..encoders import build_encoder
        from ..tl import predict_cohort
        from ._features import bare_forward

        report = predict_cohort([slide], model_dir, out_dir=out_dir, overwrite=True, **options["cohort"])
        peak_mb = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        )  # before the bare forward's tensors
        row = report.iloc[0].to_dict()
        if row["status"] != "done":
            queue.put({"error": f"{row['status']}: {row['error']}"})
            return
        from spatialdata import read_zarr

        table = read_zarr(row["zarr"]).tables["table"]
        stream = float(table.uns[f"X_{options['encoder']}"]["params"]["patches_per_s"])
        module, spec = build_encoder(options["encoder"])
        n_bare = min(int(row["n_tiles"]), options["bare_patches"])
        bare = bare_forward(module, spec, n_bare, batch_size=options["cohort"]["batch_size"])
        queue.put(
            {
                "n_tiles": int(row["n_tiles"]),
                "seconds": float(row["seconds"]),
                "stream_tiles_per_s": stream,
                "bare_forward_tiles_per_s": bare,
                "peak_rss_mb": peak_mb,
            }
        )
    except Exception as err:  # reported in the table, not lost in the child
        queue.put({"error": f"{type(err).__name__}: {err}"})


def bench_wsi(
    *,
    areas: tuple[int, ...] = (1, 2, 4),
    region_tiles: int = 32,
    section: str = "B4",
    encoder: str = "lite0",
    tile_um: float = 112.0,
    batch_size: int = 32,
    batch_tiles: int = 4096,
    bare_patches: int = 512,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    out_dir: str | Path = "bench_output",
) -> pd.DataFrame:
    """Measure :func:`hist2st_tk.tl.predict_cohort` on synthetic 100,000 x 100,000 px slides.

    The slides (written once into ``cache_dir``, default ``out_dir/cache``) are glass at 0.5 um/px with
    1, 2 or 4 (``areas``) square tissue regions of ``region_tiles`` x ``region_tiles`` tiles of
    ``tile_um``, each repeating a 2,048 px crop of the HER2ST section's H&E; JPEG tiles of 512 px,
    eight pyramid levels. Each slide runs in a fresh process: read, tile, stream the features, predict
    (a small ridge model reading ``X_{encoder}``), write the store. Recorded per slide: tiles, seconds of
    the whole slide, tiles/s of the streamed feature loop and of the bare encoder forward on pre-made
    tensors right after in the same process, their ratio, and the process's peak resident memory.
    Writes ``wsi.json`` and ``wsi.md`` into ``out_dir``.
    """
    import multiprocessing
    import shutil
    import tempfile

    out = Path(out_dir)
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    tile_px = round(tile_um / SLIDE_MPP)
    slides = _cached_slides(cache, tuple(areas), region_tiles, tile_px, section, data_dir)
    model_dir = _fit_speed_model(
        cache / f"speed_model_{encoder}_{tile_um:g}um", encoder=encoder, tile_um=tile_um
    )
    options = {
        "encoder": encoder,
        "bare_patches": bare_patches,
        "cohort": {"tile_um": tile_um, "batch_size": batch_size, "batch_tiles": batch_tiles, "device": "cpu"},
    }
    context = multiprocessing.get_context("spawn")  # a fresh process: its peak memory is this slide's alone
    rows = []
    for area, slide in slides.items():
        work = Path(tempfile.mkdtemp(prefix="bench_wsi_"))
        queue = context.Queue()
        process = context.Process(
            target=_measure, args=(str(slide), str(model_dir), str(work), options, queue)
        )
        process.start()
        result = queue.get()
        process.join()
        shutil.rmtree(work, ignore_errors=True)
        rows.append({"slide": slide.name, "tissue_area": f"{area}x", **result})
    table = pd.DataFrame(rows)
    if "error" not in table or table["error"].isna().all():
        table = table.drop(columns=["error"], errors="ignore")
        table["ratio_stream_to_bare"] = table["stream_tiles_per_s"] / table["bare_forward_tiles_per_s"]
        table["seconds_per_1000_tiles"] = 1000 * table["seconds"] / table["n_tiles"]
        table["time_vs_1x"] = table["seconds"] / table["seconds"].iloc[0]
    notes = [
        f"Synthetic slides of {SLIDE_PX:,} x {SLIDE_PX:,} px at {SLIDE_MPP} um/px (pyramidal JPEG TIFF, "
        f"{FILE_TILE_PX} px tiles), glass with 1, 2 or 4 square tissue regions of {region_tiles} x {region_tiles} "
        f"tiles of {tile_um:g} um, each repeating a {TEXTURE_PX} px crop of HER2ST {section} H&E.",
        f"Each slide runs in a fresh process through ht.tl.predict_cohort (read_wsi, tile_tissue, predict_slide "
        f"with {encoder} features streamed in batches of {batch_tiles} tiles, ridge predictions, write_zarr).",
        "seconds = the whole slide; stream = tiles/s of the feature loop (read, resample, normalise, forward); "
        f"bare = {encoder} forward alone on pre-made tensors ({bare_patches} patches) in the same process right after.",
        f"peak_rss_mb = the process's peak resident memory (ru_maxrss) over the slide's run, imports included, "
        f"before the bare forward's pre-made tensors; goal <= {GOAL_RSS_MB:.0f}; "
        f"ratio goal >= {GOAL_RATIO}; time goal: linear in the tissue area (time_vs_1x close to 1, 2, 4).",
    ]
    write_report(
        "wsi", table, out_dir=out, title="Whole-slide prediction: memory, speed, scaling", notes=notes
    )
    return table
