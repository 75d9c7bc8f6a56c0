"""A small synthetic section whose expression is a known function of image colour and texture."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._constants import VISIUM_SPOT_DIAMETER_UM
from .._logging import logger
from .._scale import check_mpp
from .._validate import check_count
from ..io._elements import assemble, he_image, spot_circles, spots_table

if TYPE_CHECKING:
    from spatialdata import SpatialData

#: Centre-to-centre distance of the square spot grid, in microns.
PITCH_UM = 100.0
#: Spot diameter, in microns (as Visium).
SPOT_DIAMETER_UM = VISIUM_SPOT_DIAMETER_UM
#: Nucleus radius, in microns.
NUCLEUS_RADIUS_UM = 3.5
#: Expected number of nuclei in one pitch x pitch cell at ``texture == 1``.
MAX_NUCLEI_PER_CELL = 40
#: RGB colours: tissue background at ``colour == 1`` (haematoxylin purple) and ``colour == 0``
#: (eosin pink), nuclei, and the bare glass around the tissue.
HAEMATOXYLIN_RGB = (155, 95, 175)
EOSIN_RGB = (235, 165, 205)
NUCLEUS_RGB = (70, 35, 110)
GLASS_RGB = (243, 241, 246)
#: Every channel of every pixel gets uniform integer noise in ``[-PIXEL_NOISE, PIXEL_NOISE]``.
PIXEL_NOISE = 10
#: Which latent factors gene ``i`` depends on: ``_GENE_KINDS[i % 6]``.
_GENE_KINDS = ("colour", "texture", "both", "colour", "texture", "none")
#: Sinusoids summed into one smooth latent field, and the range of their wavelengths (in pitches).
_N_WAVES = 4
_WAVELENGTH_PITCHES = (5.0, 15.0)
#: Log expression rate at ``colour = texture = 0.5``, and absolute weights of the latents.
_MID_LOG_RATE_RANGE = (2.0, 4.5)
_WEIGHT_RANGE = (1.0, 2.0)
#: A pitch must span at least this many pixels, and the image may hold at most this many pixels.
_MIN_PITCH_PX = 10
_MAX_PIXELS = 200_000_000


def synthetic(
    n_spots: int = 100,
    n_genes: int = 30,
    *,
    seed: int = 0,
    sample: str = "synthetic",
    patient: str | None = None,
    mpp: float = 1.0,
) -> SpatialData:
    """A small synthetic section whose expression is a known function of the H&E image.

    Meant for fast unit tests and documentation: a predictor that reads the image can predict the
    expression well, one given a shuffled image cannot.

    Spots lie on a square grid (as close to square as ``n_spots`` allows, filled row by row) with a
    100 um pitch; each spot is a 55 um circle at the centre of its pitch x pitch cell. Every spot has
    two latent factors in ``[0, 1]``, ``colour`` and ``texture``, drawn from independent smooth random
    fields (a sum of a few low-frequency sinusoids, 500-1500 um wavelengths, mapped through the normal
    CDF), so that neighbouring spots are alike.

    The image paints each spot's cell like H&E: a background that mixes eosin pink (``colour = 0``)
    and haematoxylin purple (``colour = 1``), and dark nuclei (3.5 um radius) whose number is
    ``Poisson(40 * texture)`` per cell, placed uniformly inside the cell. A margin of one pitch of bare
    glass surrounds the grid. Every pixel gets uniform noise (integers in ``[-10, 10]``).

    Counts are ``Poisson(exp(intercept_g + weight_colour_g * colour + weight_texture_g * texture))``.
    Gene ``i`` depends on colour, texture, both or neither (a noise gene) following the cycle
    ``colour, texture, both, colour, texture, none``; non-zero weights have a random sign and an
    absolute value in ``[1, 2]``; intercepts are set so that the log rate at ``colour = texture = 0.5``
    lies in ``[2, 4.5]`` (7 to 90 counts). Noise genes are independent of the latents in
    ``layers["counts"]``; in the library-size normalised ``X`` they depend on them weakly, because with
    few genes the total count of a spot does.

    Parameters
    ----------
    n_spots
        Number of spots.
    n_genes
        Number of genes, named ``"gene_000"``, ``"gene_001"``, ...
    seed
        Seed of numpy's random generator. The latents and counts depend on ``seed``, ``n_spots`` and
        ``n_genes`` only, not on ``mpp``: the same seed at another resolution gives the same expression.
        The gene weights and intercepts depend on ``n_genes`` only: sections of other seeds share them,
        like sections of one tissue type, so a model fitted on one section applies to another.
    sample
        Section name; element names derive from it.
    patient
        Patient the section comes from (defaults to ``sample``).
    mpp
        Microns per pixel of the image (a 100 um pitch spans ``100 / mpp`` pixels).

    Returns
    -------
    A SpatialData with the same contract as the readers (see :func:`hist2st_tk.io.read_st`):

    - ``images["{sample}_he"]``: RGB uint8 ``(c, y, x)``;
    - ``shapes["{sample}_spots"]``: circles of 55 um diameter (radius in pixels), index ``"spot_0000"``, ...;
    - ``tables["table"]``: raw counts in ``layers["counts"]``, log-normalised ``X``, ``obs["sample"]``,
      ``obs["patient"]``, ``obs["array_x"]``, ``obs["array_y"]`` (grid column and row),
      ``obs["latent_colour"]``, ``obs["latent_texture"]`` (the truth), ``obs["tumor"]`` (nullable
      boolean, ``latent_colour > 0.5``), ``obsm["spatial"]`` (pixel x, y); ``var["intercept"]``,
      ``var["weight_colour"]``, ``var["weight_texture"]`` (the truth);
    - ``attrs["hist2st_tk"]["mpp"]["{sample}_he"]``: ``mpp`` with source ``"user"``.

    Examples
    --------
    >>> import hist2st_tk as ht
    >>> sdata = ht.datasets.synthetic(n_spots=64, n_genes=12, seed=1)
    >>> sdata["table"].shape
    (64, 12)
    """
    n_spots = check_count(n_spots, "n_spots")
    n_genes = check_count(n_genes, "n_genes")
    mpp = check_mpp(mpp)
    pitch = PITCH_UM / mpp
    if pitch < _MIN_PITCH_PX:
        msg = (
            f"`mpp={mpp}` is too coarse: the {PITCH_UM:g} um spot pitch would span {pitch:.2f} pixels "
            f"(at least {_MIN_PITCH_PX} needed). Use `mpp <= {PITCH_UM / _MIN_PITCH_PX:g}`."
        )
        raise ValueError(msg)
    n_cols = math.ceil(math.sqrt(n_spots))
    n_rows = math.ceil(n_spots / n_cols)
    height, width = round(pitch * (n_rows + 2)), round(pitch * (n_cols + 2))
    if height * width > _MAX_PIXELS:
        msg = (
            f"The synthetic image would be {width} x {height} px ({n_spots} spots at {mpp} um/px), over "
            f"{_MAX_PIXELS:,} pixels. Use fewer spots or a larger `mpp`."
        )
        raise ValueError(msg)

    rng_fields, rng_counts, rng_image = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    # One biology for every section: gene weights do not depend on `seed`, so that a model fitted on
    # one synthetic section applies to another.
    rng_genes = np.random.default_rng(_GENE_SEED)
    col, row = np.divmod(np.arange(n_spots), n_cols)[::-1]
    grid = np.column_stack([col, row]).astype(np.float64)
    colour = _smooth_field(grid, rng_fields)
    texture = _smooth_field(grid, rng_fields)

    var = _gene_weights(n_genes, rng_genes)
    log_rate = (
        var["intercept"].to_numpy()
        + np.outer(colour, var["weight_colour"].to_numpy())
        + np.outer(texture, var["weight_texture"].to_numpy())
    )
    counts = rng_counts.poisson(np.exp(log_rate))

    image = _paint(colour, texture, col, row, n_cols=n_cols, n_rows=n_rows, pitch=pitch, rng=rng_image)

    ids = pd.Index([f"spot_{i:0{max(4, len(str(n_spots - 1)))}d}" for i in range(n_spots)])
    xy = (grid + 1.5) * pitch
    obs = pd.DataFrame(
        {
            "array_x": col,
            "array_y": row,
            "latent_colour": colour,
            "latent_texture": texture,
            "tumor": pd.array(colour > 0.5, dtype="boolean"),
        },
        index=ids,
    )
    table = spots_table(
        counts, obs=obs, var=var, spot_ids=ids, xy=xy, sample=sample, patient=patient or sample
    )
    logger.info(
        "synthetic section %r: %d spots x %d genes, %d x %d px at %.4f um/px",
        sample,
        n_spots,
        n_genes,
        width,
        height,
        mpp,
    )
    return assemble(
        sample=sample,
        image=he_image(image),
        spots=spot_circles(xy, SPOT_DIAMETER_UM / 2 / mpp, ids),
        table=table,
        mpp=mpp,
        mpp_source="user",
    )


_GENE_SEED = 20211015


def _smooth_field(grid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field in ``(0, 1)`` at grid positions (in pitches).

    A sum of ``_N_WAVES`` plane waves with random directions, wavelengths and phases, scaled to unit
    variance and mapped through the normal CDF (so values are spread over ``(0, 1)``).
    """
    from scipy.special import ndtr

    angle = rng.uniform(0, 2 * np.pi, _N_WAVES)
    wavelength = rng.uniform(*_WAVELENGTH_PITCHES, _N_WAVES)
    phase = rng.uniform(0, 2 * np.pi, _N_WAVES)
    direction = np.column_stack([np.cos(angle), np.sin(angle)]) / wavelength[:, None]
    waves = np.sin(2 * np.pi * grid @ direction.T + phase)
    return ndtr(waves.sum(axis=1) / math.sqrt(_N_WAVES / 2))


def _gene_weights(n_genes: int, rng: np.random.Generator) -> pd.DataFrame:
    kinds = np.resize(np.array(_GENE_KINDS), n_genes)
    signs = rng.choice([-1.0, 1.0], size=(2, n_genes))
    magnitudes = rng.uniform(*_WEIGHT_RANGE, size=(2, n_genes))
    weights = signs * magnitudes
    weights[0, ~np.isin(kinds, ("colour", "both"))] = 0.0
    weights[1, ~np.isin(kinds, ("texture", "both"))] = 0.0
    names = [f"gene_{i:0{max(3, len(str(n_genes - 1)))}d}" for i in range(n_genes)]
    intercept = rng.uniform(*_MID_LOG_RATE_RANGE, n_genes) - weights.sum(axis=0) / 2
    return pd.DataFrame(
        {
            "intercept": intercept,
            "weight_colour": weights[0],
            "weight_texture": weights[1],
        },
        index=pd.Index(names),
    )


def _paint(
    colour: np.ndarray,
    texture: np.ndarray,
    col: np.ndarray,
    row: np.ndarray,
    *,
    n_cols: int,
    n_rows: int,
    pitch: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """The ``(3, y, x)`` uint8 mosaic: one H&E-like cell per spot, one pitch of glass around the grid.

    Painted one band of cells at a time, so memory stays near the size of the final image.
    """
    x_edges = np.round(pitch * np.arange(n_cols + 3)).astype(np.int64)
    y_edges = np.round(pitch * np.arange(n_rows + 3)).astype(np.int64)
    height, width = int(y_edges[-1]), int(x_edges[-1])
    image = np.empty((3, height, width), dtype=np.uint8)

    background = np.rint(np.outer(colour, HAEMATOXYLIN_RGB) + np.outer(1 - colour, EOSIN_RGB))
    glass = np.asarray(GLASS_RGB)
    # Column of the grid each pixel column belongs to; -1 and n_cols are the glass margins.
    pixel_col = np.repeat(np.arange(-1, n_cols + 1), np.diff(x_edges))
    n_nuclei = rng.poisson(MAX_NUCLEI_PER_CELL * texture)
    stamp = _disk_offsets(NUCLEUS_RADIUS_UM * pitch / PITCH_UM)
    nucleus = np.asarray(NUCLEUS_RGB, dtype=np.int16)[:, None]

    for band in range(-1, n_rows + 1):
        y0, y1 = int(y_edges[band + 1]), int(y_edges[band + 2])
        colours = np.tile(glass, (n_cols + 2, 1)).astype(np.int16)
        in_band = np.flatnonzero(row == band)
        colours[col[in_band] + 1] = background[in_band]
        pixels = np.ascontiguousarray(colours[pixel_col + 1].T[:, None, :].repeat(y1 - y0, axis=1))
        if len(in_band):
            ys, xs = _nuclei_pixels(in_band, col, n_nuclei, x_edges, (y0, y1), stamp, rng)
            pixels[:, ys - y0, xs] = nucleus
        pixels += rng.integers(-PIXEL_NOISE, PIXEL_NOISE + 1, size=pixels.shape, dtype=np.int8)
        np.clip(pixels, 0, 255, out=pixels)
        image[:, y0:y1] = pixels
    return image


def _disk_offsets(radius: float) -> np.ndarray:
    """Integer ``(dy, dx)`` offsets of the pixels of a disk (at least one pixel)."""
    reach = math.ceil(radius)
    dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    inside = dy**2 + dx**2 <= max(radius, 0.5) ** 2
    return np.column_stack([dy[inside], dx[inside]])


def _nuclei_pixels(
    spots: np.ndarray,
    col: np.ndarray,
    n_nuclei: np.ndarray,
    x_edges: np.ndarray,
    y_range: tuple[int, int],
    stamp: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Image pixels covered by the nuclei of ``spots`` (all in one band), clipped to their own cell."""
    owner = np.repeat(spots, n_nuclei[spots])
    x0, x1 = x_edges[col[owner] + 1], x_edges[col[owner] + 2]
    y0, y1 = y_range
    cx = rng.uniform(x0, x1).astype(np.int64)
    cy = rng.uniform(y0, y1, len(owner)).astype(np.int64)
    ys = cy[:, None] + stamp[None, :, 0]
    xs = cx[:, None] + stamp[None, :, 1]
    inside = (ys >= y0) & (ys < y1) & (xs >= x0[:, None]) & (xs < x1[:, None])
    return ys[inside], xs[inside]
