"""Reading and writing ``.zarr`` stores, crash-safe: a store on disk is the old one or the new one, whole.

A new store is written beside its destination and renamed into place. An in-place update
(:func:`update_zarr`) builds the updated store beside the old one, sharing the unchanged image chunks
through hard links, and exchanges the two in one step, so the image is never copied.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .._files import recover, replace_dir, staging_path
from .._logging import logger
from .._validate import check_spatialdata

if TYPE_CHECKING:
    from spatialdata import SpatialData

# zarr rewrites its metadata files in place: those are copied into an updated store, never linked
_METADATA_FILES = frozenset({"zarr.json", ".zattrs", ".zgroup", ".zarray", ".zmetadata"})


def read_zarr(path: str | Path) -> SpatialData:
    """Read a SpatialData ``.zarr`` store written by this package (or by spatialdata).

    Before reading, a copy that an interrupted write of this package moved aside is put back and the
    staging folders of killed writers are removed (with a warning naming each).

    Parameters
    ----------
    path
        The store.

    Returns
    -------
    The SpatialData, backed by the store (images are read lazily).
    """
    import spatialdata

    path = Path(path)
    recover(path)
    check_store(path)
    with _quiet_zarr():
        return spatialdata.read_zarr(path)


def check_store(path: Path) -> None:
    """Raise unless ``path`` is a directory holding a zarr group (a SpatialData store)."""
    if not path.exists():
        msg = (
            f"No SpatialData store at {str(path)!r}. Make one with `hist2st read` or "
            "`ht.io.write_zarr(sdata, path)`."
        )
        raise FileNotFoundError(msg)
    if not _is_zarr_group(path):
        msg = f"{str(path)!r} is not a SpatialData .zarr store (no zarr.json or .zgroup in it)."
        raise ValueError(msg)


def write_zarr(sdata: SpatialData, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a SpatialData to a ``.zarr`` store through a staging path renamed into place.

    Everything survives the round trip through :func:`read_zarr`, including the physical scale
    (``attrs["hist2st_tk"]``). A store that is replaced is exchanged with the new one in one step
    where the system allows it, so a crash leaves the old store or the new one, whole.

    Parameters
    ----------
    sdata
        The section.
    path
        Destination store.
    overwrite
        Replace an existing ``.zarr`` store. A folder that is not a zarr store, the store the
        SpatialData is read from and any folder that contains it are never replaced.

    Returns
    -------
    The path written. ``sdata`` itself is not changed (its ``path`` still names where it was read from).
    """
    check_spatialdata(sdata)
    path = Path(path)
    recover(path)
    if path.exists():
        _check_replaceable(sdata, path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(path)
    logger.info("writing %s (images are compressed level by level: large ones take a while)", path)
    try:
        with _quiet_zarr():
            sdata.write(staging, update_sdata_path=False)
        replace_dir(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("wrote %s", path)
    return path


def update_zarr(sdata: SpatialData, elements: Sequence[str]) -> list[str]:
    """Write ``elements`` of ``sdata`` into the store it was read from, crash-safe.

    The updated store is built beside the old one (unchanged files are hard links, so the image is
    not copied) and exchanged with it in one step: killed at any moment, the store on disk is the
    old one or the new one, whole. The root attributes (``attrs``) are written too.

    Parameters
    ----------
    sdata
        A SpatialData read from a store (``sdata.path`` is set).
    elements
        Names of the elements to write: new ones, or ones that replace their copy on disk (a table).

    Returns
    -------
    The element names written.
    """
    check_spatialdata(sdata)
    names = list(dict.fromkeys(elements))
    if sdata.path is None:
        msg = "The SpatialData is not read from a store; write it with `ht.io.write_zarr(sdata, path)`."
        raise ValueError(msg)
    unknown = [name for name in names if name not in sdata]
    if unknown:
        msg = f"No element {unknown} in the SpatialData; it has {list(_element_names(sdata))}."
        raise KeyError(msg)
    path = Path(sdata.path)
    recover(path)
    staging = staging_path(path)
    try:
        _link_tree(path, staging, skip={_element_dir(sdata, name) for name in names})
        with _backed_by(sdata, staging), _quiet_zarr():
            sdata.write_element(names)
            sdata.write_attrs()
        replace_dir(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("updated %s in %s", names, path)
    return names


def _check_replaceable(sdata: SpatialData, path: Path, *, overwrite: bool) -> None:
    if not overwrite:
        msg = f"{str(path)!r} already exists; pass `overwrite=True` to replace it."
        raise FileExistsError(msg)
    if not _is_zarr_group(path):
        msg = (
            f"Cannot overwrite {str(path)!r}: it is not a .zarr store, and replacing it would delete "
            "everything in it. Choose another path, or delete it yourself."
        )
        raise ValueError(msg)
    if sdata.path is not None:
        source = Path(sdata.path).resolve()
        if source == path.resolve() or path.resolve() in source.parents:
            msg = (
                f"Cannot overwrite {str(path)!r}: the SpatialData is read lazily from "
                f"{str(sdata.path)!r}. Write to another path, or load the data into memory first."
            )
            raise ValueError(msg)


def _is_zarr_group(path: Path) -> bool:
    return path.is_dir() and ((path / "zarr.json").is_file() or (path / ".zgroup").is_file())


def _element_names(sdata: SpatialData) -> Iterator[str]:
    for _, name, _ in sdata.gen_elements():
        yield name


def _element_dir(sdata: SpatialData, name: str) -> Path:
    """Where the element ``name`` lives inside a store, relative to its root."""
    for kind, element_name, _ in sdata.gen_elements():
        if element_name == name:
            return Path(kind) / name
    raise KeyError(name)  # pragma: no cover - checked by update_zarr


def _link_tree(source: Path, target: Path, *, skip: set[Path]) -> None:
    """A copy of the store ``source`` at ``target`` without the element folders ``skip``: data files are
    hard links (copies where the file system has none), metadata files real copies."""
    for folder, subfolders, files in os.walk(source):
        relative = Path(folder).relative_to(source)
        subfolders[:] = [d for d in subfolders if relative / d not in skip]
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in files:
            _link_or_copy(Path(folder) / name, target / relative / name, copy=name in _METADATA_FILES)


def _link_or_copy(source: Path, target: Path, *, copy: bool) -> None:
    if not copy:
        try:
            os.link(source, target)
            return
        except OSError:  # e.g. a file system without hard links
            pass
    shutil.copy2(source, target)


@contextmanager
def _backed_by(sdata: SpatialData, path: Path) -> Iterator[None]:
    """Point ``sdata`` at another store for the duration (its own path is restored after)."""
    own = sdata.path
    sdata.path = path
    try:
        yield
    finally:
        sdata.path = own


@contextmanager
def _quiet_zarr() -> Iterator[None]:
    # zarr announces a future default on every array written; nothing for the user to act on
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*autosharding", category=UserWarning)
        yield
