"""Random Fourier features of the spot positions, in microns."""

from __future__ import annotations

from numbers import Integral
from typing import TYPE_CHECKING

import numpy as np

from .._constants import SPATIAL_KEY, TABLE_KEY
from .._docs import doc_params
from .._logging import log_added
from .._scale import get_mpp
from .._sdata import resolve_image_key, section_image_key, with_table
from .._section import check_section, spatial_coords
from .._validate import check_count, check_microns

if TYPE_CHECKING:
    from spatialdata import SpatialData


@doc_params
def fourier_coords(
    sdata: SpatialData,
    *,
    n_features: int = 64,
    scale_um: float = 500.0,
    seed: int = 0,
    image_key: str | None = None,
    table_key: str = TABLE_KEY,
    key_added: str = "X_fourier_coords",
    copy: bool = False,
) -> SpatialData | None:
    """Random Fourier features of the spot centres, measured in microns.

    With ``x`` the spot centre in microns (``obsm["spatial"]``, in image pixels, times the microns per
    pixel of the section's image) and ``B`` an ``(n_features, 2)`` matrix of frequencies drawn from
    ``N(0, 1 / scale_um^2)`` (cycles per micron), the features are
    ``[cos(2 pi B x), sin(2 pi B x)]``. ``B`` depends on ``n_features``, ``scale_um`` and ``seed`` only,
    so sections encoded with the same arguments share it, and a section imaged at another resolution
    gets the same features.

    The features encode **position within a section**: the origin of each section's coordinates is
    wherever its image starts, so absolute positions are not comparable across sections. Use them in
    models fitted and applied within one section (smooth spatial trends, neighbourhood context), not
    to carry a position learned on one section over to another.

    Parameters
    ----------
    sdata
        The section.
    n_features
        Number of random frequencies; the features have ``2 * n_features`` columns (all cosines,
        then all sines).
    scale_um
        Length scale in microns: frequencies have standard deviation ``1 / scale_um`` cycles per
        micron, so typical wavelengths are a few ``scale_um``. Smaller values resolve finer structure.
    seed
        Seed of numpy's random generator drawing ``B``.
    image_key
        Image whose microns per pixel applies; by default the image of the section whose spots the
        table annotates (``"{sample}_he"``), or the only image.
    {table_key}
    key_added
        ``obsm`` and ``uns`` key written.
    {copy}

    Returns
    -------
    ``None``, or with ``copy=True`` the new SpatialData. Writes into the table:

    - ``obsm[key_added]``: float32, spots x ``2 * n_features``;
    - ``uns[key_added]``: ``{"params": {"n_features", "scale_um", "seed", "mpp", "image_key"}}``.

    Nothing is written when the call fails.

    Examples
    --------
    >>> import hist2st_tk as ht
    >>> sdata = ht.datasets.synthetic(n_spots=16, n_genes=6)
    >>> ht.pp.fourier_coords(sdata, n_features=8)
    >>> sdata["table"].obsm["X_fourier_coords"].shape
    (16, 16)
    """
    n_features = check_count(n_features, "n_features")
    scale_um = _check_scale(scale_um)
    seed = _check_seed(seed)
    table = check_section(sdata, table_key, obsm=[SPATIAL_KEY])
    coords = spatial_coords(table, table_key)
    if image_key is None:
        image_key = section_image_key(sdata, table) or resolve_image_key(sdata, None)
    else:
        image_key = resolve_image_key(sdata, image_key)
    mpp = get_mpp(sdata, image_key)[0]

    features = random_fourier_features(coords * mpp, n_features=n_features, scale_um=scale_um, seed=seed)
    params = {
        "n_features": n_features,
        "scale_um": scale_um,
        "seed": seed,
        "mpp": mpp,
        "image_key": image_key,
    }

    target = table.copy() if copy else table
    target.obsm[key_added] = features
    target.uns[key_added] = {"params": params}
    log_added(f"{table_key}.obsm[{key_added!r}]", features.shape)
    log_added(f"{table_key}.uns[{key_added!r}]")
    return with_table(sdata, table_key, target) if copy else None


def random_fourier_features(xy_um: np.ndarray, *, n_features: int, scale_um: float, seed: int) -> np.ndarray:
    """``[cos(2 pi B x), sin(2 pi B x)]`` of ``(n, 2)`` positions in microns, float32 ``(n, 2 n_features)``.

    ``B`` is drawn from ``N(0, 1 / scale_um^2)`` by ``numpy.random.default_rng(seed)``.
    """
    frequencies = np.random.default_rng(seed).standard_normal((n_features, 2)) / scale_um
    phase = 2.0 * np.pi * (np.asarray(xy_um, dtype=np.float64) @ frequencies.T)
    return np.concatenate([np.cos(phase), np.sin(phase)], axis=1).astype(np.float32)


def _check_scale(scale_um: float) -> float:
    return check_microns(scale_um, "scale_um")


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        msg = f"`seed` must be an integer >= 0, got {seed!r}."
        raise ValueError(msg)
    return int(seed)


@doc_params
def fourier_features(
    sdata: SpatialData,
    *,
    patch_um: float = 112.0,
    batch_size: int = 64,
    stain: bool | None = None,
    table_key: str = TABLE_KEY,
    key_added: str = "X_fourier",
    progress: bool = True,
) -> None:
    """Frequency-domain features of the patch around each spot (the dual-modality model's Fourier stream).

    Each patch is resampled to 224 px, turned grey, windowed, and its 2-D FFT log power averaged in 16
    radial frequency bands from DC to Nyquist (the ``fft`` encoder, run by :func:`image_features`).
    Frequencies are relative to the patch, so at a fixed ``patch_um`` a band is a fixed physical scale
    (band ``k`` of a 112 um patch holds structures of about ``112 / (k * 112 / 16)`` um and so on).
    For random Fourier features of the spot coordinates see :func:`fourier_coords`.

    Parameters
    ----------
    sdata
        The section; its image needs a known microns per pixel.
    patch_um
        Edge of the square patch in microns.
    batch_size
        Patches per batch.
    stain
        Apply the stain normaliser recorded by :func:`normalize_stain` (see :func:`image_features`).
    {table_key}
    key_added
        ``obsm`` key written.
    progress
        Show a progress bar.

    Returns
    -------
    ``None``. Writes ``table.obsm[key_added]`` (float32, spots x 16), ``table.uns[key_added]["params"]``
    and the patch shapes, as :func:`image_features` does.
    """
    from ._features import image_features

    image_features(
        sdata,
        encoder="fft",
        patch_um=patch_um,
        batch_size=batch_size,
        stain=stain,
        table_key=table_key,
        key_added=key_added,
        progress=progress,
    )
