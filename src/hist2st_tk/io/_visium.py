"""Reader for 10x Visium sections (Space Ranger output), built on :func:`spatialdata_io.visium`."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._constants import INSTANCE_KEY, REGION_KEY, VISIUM_SPOT_DIAMETER_UM
from .._logging import format_ids, logger
from .._scale import check_mpp
from ._elements import (
    assemble,
    check_sample_name,
    he_image,
    image_size,
    lazy_rgb_file,
    spot_circles,
    spots_table,
)
from ._validate import check_counts, decode_image, is_blank

if TYPE_CHECKING:
    from spatialdata import SpatialData

#: Counts files looked for, in this order, when ``counts_file`` is not given.
_COUNTS_FILES = ("filtered_feature_bc_matrix.h5", "filtered_feature_bc_matrix/matrix.mtx.gz")
_SCALEFACTORS_FILE = "spatial/scalefactors_json.json"
_POSITIONS_FILES = ("spatial/tissue_positions_list.csv", "spatial/tissue_positions.csv")
#: Space Ranger's downscaled images, highest resolution first, with spatialdata-io's element suffix.
_SPACERANGER_IMAGES = (
    ("spatial/tissue_hires_image.png", "hires"),
    ("spatial/tissue_lowres_image.png", "lowres"),
)
#: More spot centres than this fraction outside the image means the image does not belong to the spots.
_MAX_OUTSIDE_FRACTION = 0.5


def read_visium(
    path: str | Path,
    *,
    sample: str | None = None,
    patient: str | None = None,
    counts_file: str | None = None,
    fullres_image: str | Path | None = None,
    mpp: float | None = None,
) -> SpatialData:
    """Read a 10x Visium section (Space Ranger output folder) into a SpatialData.

    The folder is read with :func:`spatialdata_io.visium` and normalised to this package's data model:
    one H&E image, spots in that image's pixels, a log-normalised table and an explicit physical scale.

    Parameters
    ----------
    path
        Space Ranger output folder, holding the counts (``filtered_feature_bc_matrix.h5`` or
        ``filtered_feature_bc_matrix/``) and ``spatial/`` (``scalefactors_json.json``,
        ``tissue_positions_list.csv`` or ``tissue_positions.csv``, ``tissue_hires_image.png``,
        ``tissue_lowres_image.png``).
    sample
        Section name; element names derive from it. Defaults to the folder name.
    patient
        Patient the section comes from (defaults to ``sample``).
    counts_file
        Counts file relative to ``path``. By default ``filtered_feature_bc_matrix.h5`` if present, else
        ``filtered_feature_bc_matrix/matrix.mtx.gz``. A Matrix Market folder may be given for its
        ``matrix.mtx.gz``.
    fullres_image
        The full-resolution image given to Space Ranger (TIFF, JPEG or PNG, RGB), absolute or relative
        to ``path``. When given it becomes the section's image (read lazily); otherwise the hires image is
        used, or the lowres image when there is no hires one or when the hires one is blank (every pixel
        the same colour, as in placeholder images; a warning is logged).
    mpp
        Microns per pixel of the kept image. By default derived from the 55 um Visium spot
        (``55 / spot diameter in image pixels``, source ``"visium_spot"``).

    Returns
    -------
    A SpatialData with

    - ``images["{sample}_he"]``: RGB uint8 ``(c, y, x)`` (alpha dropped), multiscale when large, lazily read;
    - ``shapes["{sample}_spots"]``: circles of 55 um diameter in the image's pixels, indexed by barcode;
    - ``tables["table"]``: raw counts in ``layers["counts"]``, log-normalised ``X``, ``obs_names`` = ``obs["spot_id"]`` = barcodes,
      ``obs["sample"]``, ``obs["patient"]``, spatialdata-io's ``obs`` columns (``in_tissue``,
      ``array_row``, ``array_col``), ``obsm["spatial"]`` (pixel x, y of the image), annotating the spots
      (``region``, ``spot_id``);
    - ``attrs["hist2st_tk"]["mpp"]["{sample}_he"]``: microns per pixel and its source.

    Spots are in the coordinate system ``"global"``, the pixel space of the kept image.

    Raises ``ValueError`` naming the file when the counts file or a hires / lowres image is truncated or
    corrupted, when every Space Ranger image is blank (pass ``fullres_image=``), when a count is negative,
    NaN or infinite (naming the barcodes), or when a barcode of the counts file has no finite pixel
    position in the tissue positions file (naming the barcodes). Positions of barcodes that are not in
    the counts file (spots off the tissue, with the filtered matrix) are not used, so gaps there are
    ignored.
    """
    folder = Path(path)
    if not folder.is_dir():
        msg = f"The Visium folder does not exist: {str(folder)!r}."
        raise FileNotFoundError(msg)
    sample = check_sample_name(Path(os.path.abspath(folder)).name if sample is None else sample)
    if mpp is not None:
        mpp = check_mpp(mpp)
    counts_file = _find_counts_file(folder, counts_file)
    positions_file = _find_spatial_files(folder)
    if fullres_image is not None:
        kept, image_path = "fullres", _find_fullres_image(folder, fullres_image)
        _check_downscaled_images(folder)
    else:
        kept, image_path = _find_downscaled_image(folder)
    image_size(image_path)  # readable and RGB(A), before spatialdata-io fails less clearly

    raw = _read_with_spatialdata_io(folder, sample=sample, counts_file=counts_file)
    table_io = raw.tables["table"]
    check_counts(table_io.X, table_io.obs_names, folder / counts_file)
    circles_io = raw.shapes[sample]
    if kept == "fullres":
        image_data = lazy_rgb_file(image_path)
        fullres_to_image = _affine(circles_io, sample)
    else:
        image_io = raw.images[f"{sample}_{kept}_image"]
        image_data = _rgb_data(image_io, image_path)
        fullres_to_image = np.linalg.inv(_affine(image_io, sample)) @ _affine(circles_io, sample)
    _, height, width = image_data.shape

    # Spots in the kept image's pixels, ordered as the table's rows; the barcode is the spot id.
    circles_io = circles_io.loc[table_io.obs[INSTANCE_KEY].to_numpy()]
    ids = pd.Index(table_io.obs_names.astype(str))
    xy_fullres = np.column_stack([circles_io.geometry.x.to_numpy(), circles_io.geometry.y.to_numpy()])
    _check_positions(xy_fullres, ids, positions_file)
    linear = fullres_to_image[:2, :2]
    xy = xy_fullres @ linear.T + fullres_to_image[:2, 2]
    radius = circles_io["radius"].to_numpy(dtype=np.float64) * np.sqrt(abs(np.linalg.det(linear)))
    _check_inside(xy, ids, height=height, width=width, image=kept)

    if mpp is None:
        mpp, source = VISIUM_SPOT_DIAMETER_UM / (2 * float(np.median(radius))), "visium_spot"
    else:
        source = "user"

    obs = table_io.obs.drop(columns=[REGION_KEY, INSTANCE_KEY], errors="ignore")
    table = spots_table(
        table_io.X,
        obs=obs,
        var=table_io.var,
        spot_ids=ids,
        xy=xy,
        sample=sample,
        patient=patient or sample,
    )
    logger.info(
        "read Visium section %r: %d spots x %d genes, %s image %d x %d px, %.4f um/px (%s)",
        sample,
        table.n_obs,
        table.n_vars,
        kept,
        width,
        height,
        mpp,
        source,
    )
    return assemble(
        sample=sample,
        image=he_image(image_data),
        spots=spot_circles(xy, radius, ids),
        table=table,
        mpp=mpp,
        mpp_source=source,
    )


def _find_counts_file(folder: Path, counts_file: str | None) -> str:
    if counts_file is None:
        for candidate in _COUNTS_FILES:
            if (folder / candidate).is_file():
                return candidate
        msg = (
            f"No counts file in the Visium folder {str(folder)!r}: looked for {list(_COUNTS_FILES)}. "
            "Pass `counts_file=` (relative to the folder)."
        )
        raise FileNotFoundError(msg)
    counts_file = str(counts_file)
    if (folder / counts_file).is_dir():
        # spatialdata-io reads a Matrix Market folder through the path of its matrix.mtx.gz.
        counts_file = f"{counts_file.rstrip('/')}/matrix.mtx.gz"
    if not (folder / counts_file).is_file():
        msg = f"The counts file does not exist: {str(folder / counts_file)!r}."
        raise FileNotFoundError(msg)
    if not counts_file.endswith((".h5", "matrix.mtx.gz")):
        msg = (
            f"Unsupported counts file {counts_file!r}: use a 10x HDF5 file (`.h5`) or a Matrix Market "
            "folder (`filtered_feature_bc_matrix/matrix.mtx.gz`)."
        )
        raise ValueError(msg)
    return counts_file


def _check_h5(path: Path) -> None:
    """Raise naming ``path`` when it cannot be opened as HDF5 (h5py's own error names no file)."""
    import h5py

    try:
        with h5py.File(path, "r"):
            pass  # opening checks the superblock and the stored end of file: a truncated file fails here
    except OSError as err:
        msg = f"The counts file {str(path)!r} is truncated or corrupted (or not an HDF5 file): {err}"
        raise ValueError(msg) from None


def _find_spatial_files(folder: Path) -> Path:
    """The tissue positions file spatialdata-io reads (the first of :data:`_POSITIONS_FILES` present)."""
    scalefactors = folder / _SCALEFACTORS_FILE
    if not scalefactors.is_file():
        msg = f"The scalefactors file does not exist: {str(scalefactors)!r}."
        raise FileNotFoundError(msg)
    for name in _POSITIONS_FILES:
        if (folder / name).is_file():
            return folder / name
    msg = f"No tissue positions file in {str(folder / 'spatial')!r}: looked for {list(_POSITIONS_FILES)}."
    raise FileNotFoundError(msg)


def _find_fullres_image(folder: Path, fullres_image: str | Path) -> Path:
    candidate = folder / fullres_image  # an absolute `fullres_image` stays as it is
    if candidate.is_file():
        return candidate
    if Path(fullres_image).is_file():
        return Path(fullres_image)
    msg = f"The full-resolution image does not exist: {str(candidate)!r}."
    raise FileNotFoundError(msg)


def _check_downscaled_images(folder: Path) -> None:
    """Decode every Space Ranger image present: spatialdata-io decodes them all, with errors naming no file."""
    for name, _ in _SPACERANGER_IMAGES:
        if (folder / name).is_file():
            decode_image(folder / name)


def _find_downscaled_image(folder: Path) -> tuple[str, Path]:
    """The highest-resolution Space Ranger image that is not blank, as ``(kind, path)``.

    Some published samples ship a blank placeholder (e.g. all black) as their hires image: it is skipped
    with a warning in favour of the next image. Every image present is decoded, which also refuses a
    truncated one (spatialdata-io decodes them all, with errors that name no file).
    """
    present = [(kind, folder / name) for name, kind in _SPACERANGER_IMAGES if (folder / name).is_file()]
    if not present:
        msg = (
            f"No image in the Visium folder {str(folder)!r}: looked for {[n for n, _ in _SPACERANGER_IMAGES]}. "
            "Pass `fullres_image=`."
        )
        raise FileNotFoundError(msg)
    kept, blank = None, []
    for kind, path in present:
        pixels = decode_image(path)
        if kept is not None:
            continue  # decoded only to refuse a damaged file
        image_size(path)  # RGB(A), else the error says so
        if is_blank(pixels):
            blank.append((kind, path))
        else:
            kept = kind, path
    if kept is None:
        msg = (
            f"Every image of the Visium folder {str(folder)!r} is blank (every pixel the same colour): "
            f"{[str(p) for _, p in blank]}. Pass the real H&E image as `fullres_image=`."
        )
        raise ValueError(msg)
    for kind, path in blank:
        logger.warning(
            "The %s image %r is blank (every pixel the same colour, a placeholder); using the %s image %r.",
            kind,
            str(path),
            kept[0],
            str(kept[1]),
        )
    return kept


def _read_with_spatialdata_io(folder: Path, *, sample: str, counts_file: str) -> SpatialData:
    from spatialdata_io import visium

    if counts_file.endswith(".h5"):
        _check_h5(folder / counts_file)
    try:
        with warnings.catch_warnings():
            # spatialdata-io builds its table with a non-categorical region column; we rebuild the table.
            warnings.filterwarnings("ignore", message="Converting `region_key", category=UserWarning)
            return visium(folder, dataset_id=sample, counts_file=counts_file)
    except (KeyError, ValueError) as err:
        msg = f"spatialdata-io could not read the Visium folder {str(folder)!r}: {type(err).__name__}: {err}"
        raise ValueError(msg) from err
    except FileNotFoundError:
        raise  # e.g. no barcodes.tsv.gz beside matrix.mtx.gz: the error names the file
    except (OSError, EOFError) as err:
        # the images and the .h5 header were checked before: what is left to fail is the counts data
        msg = (
            f"spatialdata-io could not read the Visium folder {str(folder)!r}; is the counts file "
            f"{str(folder / counts_file)!r} truncated or corrupted? {type(err).__name__}: {err}"
        )
        raise ValueError(msg) from err


def _affine(element, coordinate_system: str) -> np.ndarray:
    """3 x 3 affine matrix (x, y) from ``element``'s intrinsic space to ``coordinate_system``."""
    from spatialdata.transformations import get_transformation

    transformation = get_transformation(element, to_coordinate_system=coordinate_system)
    matrix = transformation.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    return np.asarray(matrix, dtype=np.float64)


def _rgb_data(image, path: Path):
    """``(3, y, x)`` uint8 dask array of a spatialdata-io image, alpha dropped."""
    data = image.data
    if data.dtype != np.uint8:
        msg = f"The image {str(path)!r} has {data.dtype} pixels; an H&E image must be 8-bit RGB."
        raise ValueError(msg)
    if data.shape[0] not in (3, 4):
        msg = f"The image {str(path)!r} has {data.shape[0]} channels; an H&E image must be RGB."
        raise ValueError(msg)
    return data[:3]


def _check_positions(xy: np.ndarray, ids: pd.Index, positions_file: Path) -> None:
    """Raise naming the barcodes without a finite pixel position (NaN centres would break the shapes later)."""
    missing = ids[~np.isfinite(xy).all(axis=1)]
    if len(missing):
        msg = (
            f"The tissue positions file {str(positions_file)!r} has no finite pixel position for "
            f"{len(missing)} barcode(s) of the counts file: {format_ids(missing)}."
        )
        raise ValueError(msg)


def _check_inside(xy: np.ndarray, ids: pd.Index, *, height: int, width: int, image: str) -> None:
    x, y = xy[:, 0], xy[:, 1]
    outside = ids[(x < 0) | (x >= width) | (y < 0) | (y >= height)]
    if len(outside) > _MAX_OUTSIDE_FRACTION * len(ids):
        msg = (
            f"{len(outside)} of {len(ids)} spot centres lie outside the {width} x {height} px {image} image: "
            f"{format_ids(outside)}. Is this the right image for the section (and its scalefactors)?"
        )
        raise ValueError(msg)
    if len(outside):
        logger.warning(
            "%d spot centres lie outside the %d x %d px %s image: %s",
            len(outside),
            width,
            height,
            image,
            format_ids(outside),
        )
