"""Atomic writes: a store is complete or absent, never half written."""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from .._logging import logger

if TYPE_CHECKING:
    from spatialdata import SpatialData


def write_zarr(sdata: SpatialData, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a SpatialData to a ``.zarr`` store through a temporary path renamed into place.

    Everything survives the round trip through :func:`spatialdata.read_zarr`, including the
    physical scale (``attrs["hist2st_tk"]``).

    Parameters
    ----------
    sdata
        The section.
    path
        Destination store.
    overwrite
        Replace an existing store. The store the SpatialData is itself read from cannot be replaced.

    Returns
    -------
    The path written. ``sdata`` itself is not changed (its ``path`` still names where it was read from).
    """
    path = Path(path)
    if path.exists():
        if not overwrite:
            msg = f"{str(path)!r} already exists; pass `overwrite=True` to replace it."
            raise FileExistsError(msg)
        if sdata.path is not None and Path(sdata.path).resolve() == path.resolve():
            msg = (
                f"Cannot overwrite {str(path)!r}: the SpatialData is read lazily from it. "
                "Write to another path, or load the data into memory first."
            )
            raise ValueError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    staging = path.with_name(f".{path.name}.writing-{tag}")
    try:
        with warnings.catch_warnings():
            # zarr announces a future default on every array written; nothing for the user to act on
            warnings.filterwarnings("ignore", message="zarr v3 autosharding", category=UserWarning)
            sdata.write(staging, update_sdata_path=False)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if path.exists():
        retired = path.with_name(f".{path.name}.replaced-{tag}")
        os.replace(path, retired)
        os.replace(staging, path)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, path)
    logger.info("wrote %s", path)
    return path
