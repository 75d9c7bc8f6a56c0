"""Checkpoints of a streamed slide: the features of each finished batch of tiles, tied to the run.

A folder holds one ``.npz`` per finished batch (written atomically) and a manifest naming the run by a
fingerprint of what the batches depend on: the image (its files and a hash of its pixels), the tiles,
the model's inputs and the batching.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._files import atomic_write
from .._logging import logger
from .._sdata import instance_key

if TYPE_CHECKING:
    from spatialdata import SpatialData

#: Written into the checkpoint folder; a folder whose manifest differs belongs to another run.
MANIFEST_FILE = "manifest.json"
_CHECKPOINT_FORMAT = 2
#: Images up to this many bytes are hashed whole for the fingerprint, larger ones through a sample.
_HASHED_WHOLE_BYTES = 16 * 1024**2
#: Blocks a small image is hashed in, so that an undecodable block costs only itself.
_HASH_BLOCK_PX = 1024
#: The sample of a larger image: windows of _WINDOW_PX on a _WINDOW_GRID^2 grid and at up to _WINDOW_TILES tiles.
_WINDOW_PX = 64
_WINDOW_GRID = 4
_WINDOW_TILES = 16
#: Zarr metadata files: their size and mtime identify an image store without listing its chunks.
_ZARR_METADATA = (".zgroup", ".zarray", ".zattrs", "zarr.json")


def fingerprint(sdata: SpatialData, table, specs: dict, batch_tiles: int) -> str:
    """What a checkpoint's batches depend on: the image (its files on disk, size, scale and a hash of its
    pixels), the tiles (ids and centres), the model's inputs and the batching."""
    from .._sdata import image_levels, resolve_image_key, section_image_key, spot_centres

    key = resolve_image_key(sdata, section_image_key(sdata, table))
    pixels = image_levels(sdata.images[key])[0].data
    _, centres = spot_centres(sdata, table)
    described = {
        "format": _CHECKPOINT_FORMAT,
        "image": _image_identity(sdata, key),
        "pixels": _pixel_digest(pixels, _pixel_windows(pixels, centres)),
        "specs": specs,
        "batch_tiles": batch_tiles,
    }
    digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode())
    digest.update("\n".join(table.obs[instance_key(table)].astype(str)).encode())
    digest.update(np.ascontiguousarray(centres, dtype=np.float64).tobytes())
    return digest.hexdigest()


def _image_identity(sdata: SpatialData, key: str) -> dict:
    """The image's name, shape, dtype and scale, and the identity of the files it is read from."""
    from .._constants import ATTRS_KEY
    from .._sdata import image_levels

    level = image_levels(sdata.images[key])[0]
    attrs = sdata.attrs.get(ATTRS_KEY, {})
    slide = dict(attrs.get("slide", {}).get(key, {}))
    files = {}
    if "path" in slide:  # a slide file rewritten in place is another image
        files["slide"] = _file_identity(Path(slide["path"]))
    if sdata.path is not None:  # so is a store written again
        files["store"] = _store_identity(Path(str(sdata.path)) / "images" / key)
    return {
        "key": key,
        "shape": list(level.shape),
        "dtype": str(level.dtype),
        "mpp": attrs.get("mpp", {}).get(key),
        "slide": slide,
        "files": files,
    }


def _file_identity(path: Path) -> list | None:
    """``[size, mtime_ns]`` of a file, ``None`` when it is gone."""
    if not path.is_file():
        return None
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _store_identity(folder: Path) -> list:
    """Size and mtime of the zarr metadata of an image in a store (its group and each level's array).

    Writing the store again rewrites them; reading them never lists the image's (many) chunk files.
    """
    if not folder.is_dir():
        return []
    found = []
    for directory in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        for name in _ZARR_METADATA:
            identity = _file_identity(directory / name)
            if identity is not None:
                found.append([str((directory / name).relative_to(folder)), *identity])
    return found


def _pixel_windows(image, centres: np.ndarray) -> list[tuple[slice, slice]]:
    """The regions of a full-resolution ``(c, y, x)`` image that its fingerprint hashes.

    A small image (up to :data:`_HASHED_WHOLE_BYTES`) is hashed whole, block by block. A larger one
    through a fixed sample: small windows on a regular grid and at the centres (``(n, 2)``, x/y pixels) of
    a few tiles picked evenly in table order, which lie on tissue where a grid may see only glass. A
    100,000 px slide then costs a few dozen small reads.
    """
    height, width = (int(n) for n in image.shape[-2:])
    if image.size * np.dtype(image.dtype).itemsize <= _HASHED_WHOLE_BYTES:
        step = _HASH_BLOCK_PX
        return [
            (slice(y, min(y + step, height)), slice(x, min(x + step, width)))
            for y in range(0, height, step)
            for x in range(0, width, step)
        ]
    grid = (np.arange(_WINDOW_GRID) + 0.5) / _WINDOW_GRID
    points = [(fy * height, fx * width) for fy in grid for fx in grid]
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    centres = centres[np.isfinite(centres).all(axis=1)]
    picked = np.unique(np.linspace(0, len(centres) - 1, min(len(centres), _WINDOW_TILES)).round().astype(int))
    points += [(y, x) for x, y in centres[picked]]
    # a lazy image is read whole chunks at a time: keep each window inside one chunk
    rows, columns = getattr(image, "chunks", ((), (height,), (width,)))[-2:]
    return [(_span(y, height, np.cumsum(rows)), _span(x, width, np.cumsum(columns))) for y, x in points]


def _span(centre: float, length: int, chunk_ends: np.ndarray) -> slice:
    """:data:`_WINDOW_PX` pixels around ``centre``, moved inside the axis and, when it fits, one chunk."""
    start = min(max(round(centre - _WINDOW_PX / 2), 0), max(length - _WINDOW_PX, 0))
    chunk = int(np.searchsorted(chunk_ends, start, side="right"))
    if chunk < len(chunk_ends):
        begin = int(chunk_ends[chunk - 1]) if chunk else 0
        start = max(min(start, int(chunk_ends[chunk]) - _WINDOW_PX), begin)
    return slice(start, min(start + _WINDOW_PX, length))


def _pixel_digest(image, windows: list[tuple[slice, slice]]) -> str:
    """SHA-256 of the pixels of ``image`` (numpy or dask, ``(c, y, x)``) in ``windows``, read one by one."""
    digest = hashlib.sha256(str(np.dtype(image.dtype)).encode())
    for ys, xs in windows:
        digest.update(_window_bytes(image, ys, xs))
    return digest.hexdigest()


def _window_bytes(image, ys: slice, xs: slice) -> bytes:
    """The pixels of one window as bytes; a fixed marker when they cannot be decoded."""
    try:
        return np.ascontiguousarray(np.asarray(image[..., ys, xs])).tobytes()
    except Exception:  # decoders raise many types; a region that cannot be decoded is so on every run
        return b"undecodable"


class Checkpoint:
    """A folder of finished batches (``batch_00000.npz`` ...) and the manifest naming the run they belong to.

    Each batch file also holds the run's fingerprint and the ids of its tiles; a file that cannot be read,
    belongs to another run or holds other tiles is never used: its batch is computed again.
    """

    def __init__(self, folder: Path, fingerprint: str):
        self.folder = folder
        self.fingerprint = fingerprint

    @classmethod
    def open(cls, folder: str | Path, fingerprint: str) -> Checkpoint:
        """The checkpoint in ``folder``, created when missing or empty; refused when it is another run's."""
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            msg = f"`checkpoint_dir` {str(folder)!r} is a file; give a folder."
            raise FileExistsError(msg)
        if folder.is_dir() and any(folder.iterdir()):
            if _recorded_fingerprint(folder) != fingerprint:
                msg = (
                    f"The checkpoint folder {str(folder)!r} holds other content (another slide or other pixels, "
                    "other tiles, another model's inputs, another `batch_tiles` or an older version's files); "
                    "give an empty or dedicated folder, or delete it to start over."
                )
                raise FileExistsError(msg)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / MANIFEST_FILE, json.dumps({"fingerprint": fingerprint}).encode())
        return cls(folder, fingerprint)

    def _path(self, number: int) -> Path:
        return self.folder / f"batch_{number:05d}.npz"

    def load(self, number: int, rows: np.ndarray) -> dict | None:
        """Batch ``number``, whose tiles are ``rows``, from its file; ``None`` when there is none or it
        cannot be used (logged with the file's name: the batch is computed again and the file replaced)."""
        path = self._path(number)
        if not path.is_file():
            return None
        try:
            batch = _read_batch(path)
        except Exception as err:  # a truncated or damaged file raises zipfile, numpy or json errors alike
            problem = f"cannot be read ({type(err).__name__}: {err})"
        else:
            problem = self._mismatch(batch, number, rows)
            if problem is None:
                return batch
        logger.warning("The checkpoint batch %s %s; computing it again.", path, problem)
        return None

    def _mismatch(self, batch: dict, number: int, rows: np.ndarray) -> str | None:
        """Why a stored batch is not batch ``number`` of this run, or ``None`` when it is."""
        if batch["fingerprint"] != self.fingerprint:
            return "belongs to another run (its fingerprint is not the manifest's)"
        if not np.array_equal(batch["rows"], rows):
            return f"holds other tiles than batch {number} ({_first_difference(batch['rows'], rows)})"
        kept = rows[~np.isin(rows, batch["skipped"])]
        lengths = {len(values) for values in batch["features"].values()}
        if not np.array_equal(batch["ids"], kept) or lengths - {len(kept)}:
            return "is inconsistent (its features do not match its tiles)"
        return None

    def save(self, number: int, batch: dict, rows: np.ndarray) -> None:
        """Write batch ``number`` (tiles ``rows``) atomically, with the run's fingerprint."""
        import io

        buffer = io.BytesIO()
        arrays = {f"features/{key}": value for key, value in batch["features"].items()}
        np.savez(
            buffer,
            fingerprint=np.asarray(self.fingerprint),
            rows=np.asarray(rows, dtype=str),
            ids=batch["ids"],
            skipped=batch["skipped"],
            params=np.asarray(json.dumps(batch["params"], default=_plain)),
            **arrays,
        )
        atomic_write(self._path(number), buffer.getvalue())


def _recorded_fingerprint(folder: Path) -> str | None:
    """The fingerprint in a checkpoint folder's manifest, ``None`` without one; a damaged one is refused.

    The manifest is written atomically, so a damaged one was damaged outside this package: the batches
    beside it cannot be told to belong to this run, and the folder is left for the user to delete.
    """
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        return None
    try:
        fingerprint = json.loads(manifest.read_bytes())["fingerprint"]
        problem = None if isinstance(fingerprint, str) else "its fingerprint is not text"
    except (ValueError, KeyError, TypeError) as err:  # not text, not JSON, or not a manifest
        problem = f"{type(err).__name__}: {err}"
    if problem is not None:
        msg = (
            f"The checkpoint manifest {str(manifest)!r} is damaged ({problem}), so the batches beside it "
            f"cannot be matched to this run; delete the folder {str(folder)!r} to start again."
        )
        raise ValueError(msg)
    return fingerprint


def _read_batch(path: Path) -> dict:
    """A batch file's content, read whole (the file is closed on return, even when it is damaged)."""
    with path.open("rb") as handle, np.load(handle, allow_pickle=False) as stored:
        params = json.loads(str(stored["params"]))
        return {
            "fingerprint": str(stored["fingerprint"]),
            "rows": stored["rows"],
            "ids": stored["ids"],
            "skipped": stored["skipped"],
            "features": {key: stored[f"features/{key}"] for key in params},
            "params": params,
        }


def _first_difference(stored: np.ndarray, rows: np.ndarray) -> str:
    """Where the tile ids stored in a batch file first differ from the batch's tiles."""
    for got, want in zip(stored, rows, strict=False):
        if got != want:
            return f"{str(got)!r} where {str(want)!r} is expected"
    return f"{len(stored)} tiles where {len(rows)} are expected"


def _plain(value):
    """JSON for numpy scalars and arrays in ``uns`` params."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    msg = f"Cannot store {type(value).__name__} in a checkpoint."
    raise TypeError(msg)
