"""Reader for legacy Spatial Transcriptomics (ST) sections: counts, spot file and H&E image."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._constants import ST_SPOT_DIAMETER_UM, ST_SPOT_PITCH_UM
from .._logging import format_ids, logger
from .._scale import check_mpp, mpp_from_grid
from ._elements import (
    assemble,
    check_file,
    check_sample_name,
    he_image,
    image_size,
    lazy_rgb_file,
    spot_circles,
    spots_table,
)
from ._validate import check_counts

if TYPE_CHECKING:
    from spatialdata import SpatialData

_SPOT_COLUMNS = ("x", "y", "pixel_x", "pixel_y")
#: Fewer matching spots than this fraction means the files belong to different sections.
_MIN_MATCHED_FRACTION = 0.5


def read_st(
    counts: str | Path,
    spots: str | Path,
    image: str | Path,
    *,
    sample: str,
    patient: str | None = None,
    mpp: float | None = None,
) -> SpatialData:
    """Read a legacy ST section (Stahl et al. 2016 arrays) into a SpatialData.

    Parameters
    ----------
    counts
        Tab-separated raw UMI counts (optionally gzipped), spots x genes; the row index is the spot id
        ``"{x}x{y}"`` of the array grid.
    spots
        Tab-separated spot file with columns ``x``, ``y`` (array grid), ``pixel_x``, ``pixel_y`` (spot
        centre in image pixels) and optionally ``selected`` (only rows with 1 are kept).
    image
        The H&E image (JPEG, PNG or TIFF), RGB. It is read lazily: nothing is decoded until used. These
        formats are not tiled, so the first computation decodes the whole file; for repeated random access
        write the section with :func:`hist2st_tk.io.write_zarr` and read the store back.
    sample
        Section name; element names derive from it.
    patient
        Patient the section comes from (defaults to ``sample``).
    mpp
        Microns per pixel. By default derived from the 200 um pitch of the spot grid
        (``200 / median pixel distance between grid neighbours``, source ``"st_grid"``).

    Returns
    -------
    A SpatialData with

    - ``images["{sample}_he"]``: RGB uint8 ``(c, y, x)``, multiscale, lazily read;
    - ``shapes["{sample}_spots"]``: circles of 100 um diameter (radius in pixels), index = spot id;
    - ``tables["table"]``: raw counts in ``layers["counts"]``, log-normalised ``X``,
      ``obs["sample"]``, ``obs["patient"]``, ``obs["array_x"]``, ``obs["array_y"]``,
      ``obsm["spatial"]`` (pixel x, y), annotating the spots (``region``, ``spot_id``);
    - ``attrs["hist2st_tk"]["mpp"]["{sample}_he"]``: microns per pixel and its source.

    Spots without counts and count rows without a spot are dropped with a logged warning; when fewer
    than half of them match, the files are taken to belong to different sections and an error is raised.

    Raises ``ValueError`` naming the file and the spots, rows or columns at fault when a file is empty,
    a count is negative, NaN or infinite, a spot's ``x``, ``y``, ``pixel_x`` or ``pixel_y`` is not a
    finite number, or a grid position ``x``, ``y`` is not a whole number.
    """
    sample = check_sample_name(sample)
    counts_path = check_file(counts, "counts")
    spots_path = check_file(spots, "spots")
    height, width = image_size(image)
    if mpp is not None:
        mpp = check_mpp(mpp)

    spot_table = _read_spot_file(spots_path)
    count_table = _read_counts(counts_path)
    spot_table, count_table = _match_spots(spot_table, count_table)
    _check_inside(spot_table, height=height, width=width)

    xy = spot_table[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64)
    if mpp is None:
        grid = spot_table[["x", "y"]].to_numpy()
        mpp, source = mpp_from_grid(grid, xy, pitch_um=ST_SPOT_PITCH_UM), "st_grid"
    else:
        source = "user"

    ids = spot_table.index
    obs = pd.DataFrame(
        {"array_x": spot_table["x"].to_numpy(), "array_y": spot_table["y"].to_numpy()}, index=ids
    )
    table = spots_table(
        count_table.to_numpy(),
        obs=obs,
        var=pd.DataFrame(index=count_table.columns.astype(str)),
        spot_ids=ids,
        xy=xy,
        sample=sample,
        patient=patient or sample,
    )
    logger.info(
        "read ST section %r: %d spots x %d genes, %.4f um/px (%s)",
        sample,
        table.n_obs,
        table.n_vars,
        mpp,
        source,
    )
    return assemble(
        sample=sample,
        image=he_image(lazy_rgb_file(image)),
        spots=spot_circles(xy, ST_SPOT_DIAMETER_UM / 2 / mpp, ids),
        table=table,
        mpp=mpp,
        mpp_source=source,
    )


def _read_tsv(path: Path, what: str, **kwargs) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t", **kwargs)
    except pd.errors.EmptyDataError:
        msg = f"The {what} file {str(path)!r} is empty."
        raise ValueError(msg) from None
    except (UnicodeDecodeError, pd.errors.ParserError, OSError, EOFError) as err:
        msg = f"Cannot read the {what} file {str(path)!r} as tab-separated text: {err}"
        raise ValueError(msg) from None


def _read_spot_file(path: Path) -> pd.DataFrame:
    table = _read_tsv(path, "spots")
    missing = [c for c in _SPOT_COLUMNS if c not in table.columns]
    if missing:
        msg = f"The spots file {str(path)!r} lacks columns {missing}; it has {list(table.columns)}."
        raise ValueError(msg)
    if "selected" in table.columns:
        table = table[table["selected"] == 1]
    table = _numeric_spot_columns(table, path)
    table = table.assign(x=table["x"].astype(int), y=table["y"].astype(int))
    table.index = pd.Index([f"{x}x{y}" for x, y in zip(table["x"], table["y"], strict=True)])
    _check_unique(table.index, f"spots file {str(path)!r}")
    return table


def _read_counts(path: Path) -> pd.DataFrame:
    table = _read_tsv(path, "counts", index_col=0)
    table.index = table.index.astype(str)
    _check_unique(table.index, f"counts file {str(path)!r}")
    non_numeric = [c for c, t in table.dtypes.items() if not np.issubdtype(t, np.number)]
    if non_numeric:
        msg = f"The counts file {str(path)!r} has non-numeric columns: {format_ids(non_numeric)}."
        raise ValueError(msg)
    check_counts(table.to_numpy(), table.index, path)
    return table


def _lines(table: pd.DataFrame, rows: pd.Index, column: str) -> str:
    """``'40px' (line 3), ...`` for error messages: values of ``column`` and their line in the file."""
    # the table keeps read_csv's row numbers (after filtering too); line 1 of the file is the header
    shown = ", ".join(f"{_value(table.at[row, column])} (line {row + 2})" for row in rows[:5])
    return f"{shown}, ... ({len(rows)} in all)" if len(rows) > 5 else shown


def _value(value) -> str:
    """A field of a text file as written there: ``'40px'``, ``3.5``, or ``an empty field``."""
    if isinstance(value, str):
        return repr(value)
    if pd.isna(value):
        return "an empty field"
    return str(value.item() if isinstance(value, np.generic) else value)


def _numeric_spot_columns(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``table`` with ``x``, ``y``, ``pixel_x``, ``pixel_y`` as numbers, or raise naming the column and file."""
    table = table.copy()
    for column in _SPOT_COLUMNS:
        values = pd.to_numeric(table[column], errors="coerce").astype(np.float64)
        # text such as "40px" or an empty field would fail later with a raw type error, or give NaN centres
        bad = table.index[~np.isfinite(values.to_numpy())]
        if len(bad):
            msg = (
                f"Column {column!r} of the spots file {str(path)!r} must hold finite numbers; it has "
                f"{_lines(table, bad, column)}."
            )
            raise ValueError(msg)
        table[column] = values
    for column in ("x", "y"):
        # spot ids are "{x}x{y}" of whole grid positions: casting 3.5 to int would silently make it 3
        fractional = table.index[table[column] != np.round(table[column])]
        if len(fractional):
            spots = [f"{x:g}x{y:g}" for x, y in table.loc[fractional, ["x", "y"]].itertuples(index=False)]
            msg = (
                f"Column {column!r} of the spots file {str(path)!r} must hold whole array grid positions; it has "
                f"{_lines(table, fractional, column)}, spot(s) {format_ids(spots)}. Use the integer `x`, `y` "
                "of the array (not `new_x`, `new_y`)."
            )
            raise ValueError(msg)
    return table


def _check_unique(index: pd.Index, where: str) -> None:
    duplicated = index[index.duplicated()].unique()
    if len(duplicated):
        msg = f"Duplicated spot ids in the {where}: {format_ids(duplicated)}."
        raise ValueError(msg)


def _match_spots(spot_table: pd.DataFrame, count_table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    shared = spot_table.index.intersection(count_table.index, sort=False)
    n_expected = min(len(spot_table), len(count_table))
    if len(shared) < _MIN_MATCHED_FRACTION * n_expected or len(shared) == 0:
        msg = (
            f"Only {len(shared)} of {len(spot_table)} spots have a counts row (counts rows: "
            f"{len(count_table)}, e.g. {format_ids(count_table.index, 3)}; spots e.g. "
            f"{format_ids(spot_table.index, 3)}). The counts and spots files probably come from different sections."
        )
        raise ValueError(msg)
    no_counts = spot_table.index.difference(shared, sort=False)
    no_spot = count_table.index.difference(shared, sort=False)
    if len(no_counts):
        logger.warning(
            "%d spots have no counts row and are dropped: %s", len(no_counts), format_ids(no_counts)
        )
    if len(no_spot):
        logger.warning("%d counts rows have no spot and are dropped: %s", len(no_spot), format_ids(no_spot))
    return spot_table.loc[shared], count_table.loc[shared]


def _check_inside(spot_table: pd.DataFrame, *, height: int, width: int) -> None:
    x, y = spot_table["pixel_x"].to_numpy(), spot_table["pixel_y"].to_numpy()
    outside = spot_table.index[(x < 0) | (x >= width) | (y < 0) | (y >= height)]
    if len(outside):
        msg = (
            f"{len(outside)} spot centres lie outside the {width} x {height} px image: {format_ids(outside)}. "
            "Is this the right image for the spots file (or a downscaled copy)?"
        )
        raise ValueError(msg)
