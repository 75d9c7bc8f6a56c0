"""Checks of what the readers read, shared by the ST and Visium readers; each error names the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from .._logging import format_ids


def _bad_rows(matrix, is_bad) -> np.ndarray:
    """Row numbers of ``matrix`` (dense or sparse) with at least one value where ``is_bad`` is true."""
    if sparse.issparse(matrix):
        coo = sparse.coo_matrix(matrix)  # only stored values can be bad: an implicit zero never is
        return np.unique(coo.row[is_bad(coo.data)])
    return np.flatnonzero(is_bad(np.asarray(matrix)).reshape(len(matrix), -1).any(axis=1))


def _negative(values: np.ndarray) -> np.ndarray:
    # `where=` keeps NaN out of the comparison; those are reported as not finite
    return np.less(values, 0, where=np.isfinite(values), out=np.zeros(values.shape, dtype=bool))


def check_counts(matrix, spot_names, file: str | Path) -> None:
    """Raise when counts are NaN, infinite or negative, naming the spots and the file.

    Normalisation would fail on them later with a message that names neither (NaN in ``log1p``) or
    silently accept them (negative counts).

    Parameters
    ----------
    matrix
        Counts, spots x genes, a numpy array or a scipy sparse matrix.
    spot_names
        Name of each row (spot ids or barcodes).
    file
        The counts file the matrix was read from.
    """
    names = pd.Index(spot_names).astype(str)
    rules = (
        (lambda v: ~np.isfinite(v), "NaN or infinite counts", "counts must be finite numbers"),
        (_negative, "negative counts", "counts must be raw, non-negative UMI counts"),
    )
    for is_bad, what, why in rules:
        rows = _bad_rows(matrix, is_bad)
        if len(rows):
            msg = (
                f"The counts file {str(file)!r} has {what} for {len(rows)} spot(s): "
                f"{format_ids(names[rows])}; {why}."
            )
            raise ValueError(msg)


def decode_image(path: str | Path) -> np.ndarray:
    """All pixels of an image file, ``(y, x)`` or ``(y, x, channels)``, or raise naming a damaged file.

    Reading only the header (as :func:`~hist2st_tk.io._elements.image_size` does) accepts a truncated
    file; decoding every pixel is what tells it is damaged. Meant for small images (Space Ranger's
    hires and lowres PNGs), not for whole-slide scans.

    Parameters
    ----------
    path
        The image file.

    Returns
    -------
    The decoded pixels, as Pillow gives them (no conversion).
    """
    from PIL import Image, UnidentifiedImageError

    from ._elements import large_images_allowed

    try:
        with large_images_allowed(), Image.open(path) as img:
            return np.asarray(img)  # decodes the whole file
    # Pillow raises OSError ("image file is truncated"), SyntaxError ("broken PNG file") or ValueError
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        msg = f"The image file {str(path)!r} is truncated or corrupted: {type(err).__name__}: {err}"
        raise ValueError(msg) from None


def is_blank(pixels: np.ndarray) -> bool:
    """Whether every pixel of an image has the same colour (alpha ignored): a placeholder, not a picture.

    Parameters
    ----------
    pixels
        ``(y, x)`` or ``(y, x, channels)`` pixels, as returned by :func:`decode_image`.
    """
    colour = pixels[..., :3] if pixels.ndim == 3 else pixels
    return bool(colour.size == 0 or (colour == colour.reshape(-1, *colour.shape[2:])[0]).all())
