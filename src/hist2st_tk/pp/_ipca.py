"""Incremental PCA of image features, fitted on the training sections only and applied to every section."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import TABLE_KEY
from .._docs import doc_params
from .._logging import format_ids, log_added, logger
from .._sdata import sample_names, section_list
from .._section import check_section
from .._validate import check_count

if TYPE_CHECKING:
    import anndata as ad
    from sklearn.decomposition import IncrementalPCA
    from spatialdata import SpatialData


@doc_params
def ipca(
    sdatas: SpatialData | Sequence[SpatialData],
    *,
    use_rep: str,
    n_comps: int = 256,
    fit_on: Sequence[SpatialData | int | str] | None = None,
    model: IncrementalPCA | None = None,
    batch_size: int = 1024,
    whiten: bool = False,
    table_key: str = TABLE_KEY,
    key_added: str | None = None,
) -> IncrementalPCA:
    """Reduce image features with an incremental PCA fitted on the training sections only.

    :class:`sklearn.decomposition.IncrementalPCA` is fitted batch by batch (``partial_fit``) on the
    spots of the ``fit_on`` sections only, never on the others, so that the components leak nothing
    from the sections a model is evaluated on (docs/protocols.md). Every section of ``sdatas`` is then
    projected, batch by batch as well. Pass the returned ``model`` back as ``model=`` to project further
    sections (for example a new slide) without refitting.

    Parameters
    ----------
    sdatas
        A section or a sequence of sections, each holding ``table.obsm[use_rep]``.
    use_rep
        The features to reduce, e.g. ``"X_lite0"`` (written by :func:`hist2st_tk.pp.image_features`).
    n_comps
        Number of components. When it exceeds the number of features or of spots in the ``fit_on``
        sections, it is clipped to the smaller of the two and a warning is logged; the number used is
        recorded in the params. Ignored with ``model=``.
    fit_on
        The sections to fit on: SpatialData objects among ``sdatas``, indices into ``sdatas`` or sample
        names (``obs["sample"]`` values). ``None``: all of ``sdatas``. Not allowed with ``model=``.
    model
        An already fitted :class:`~sklearn.decomposition.IncrementalPCA` (or
        :class:`~sklearn.decomposition.PCA`) to apply instead of fitting one.
    batch_size
        Spots per batch, for fitting and for projecting; at least ``n_comps``. A last batch with fewer
        than ``n_comps`` spots is merged into the one before (``partial_fit`` needs at least
        ``n_comps`` rows per batch), so batches may reach ``batch_size + n_comps - 1`` rows.
    whiten
        Scale the components to unit variance (scikit-learn's ``whiten``). Ignored with ``model=``.
    {table_key}
    key_added
        ``obsm`` and ``uns`` key written; by default ``f"{use_rep}_ipca"``.

    Returns
    -------
    The fitted model (``model`` itself when given); a model fitted here gets ``fitted_on_``, the sample
    names of the sections it was fitted on. Writes into the table of every section of ``sdatas``:

    - ``obsm[key]``: float32, spots x components;
    - ``uns[key]``: ``{"params": {"use_rep", "n_comps", "n_comps_requested", "whiten", "batch_size",
      "fitted_on", "refit", "explained_variance_ratio"}}``. ``fitted_on`` lists the ``obs["sample"]``
      names of the sections the components come from (``None`` for a ``model`` fitted elsewhere);
      ``refit`` is False when ``model=`` was applied.

    Nothing is written to any section when the call fails: every section is checked and projected
    before any is written.

    Examples
    --------
    >>> import numpy as np
    >>> import hist2st_tk as ht
    >>> train = [ht.datasets.synthetic(n_spots=36, n_genes=6, seed=s, sample=f"s{s}") for s in (0, 1)]
    >>> for sdata in train:
    ...     sdata["table"].obsm["X_demo"] = np.random.default_rng(0).normal(size=(36, 20)).astype("float32")
    >>> model = ht.pp.ipca(train, use_rep="X_demo", n_comps=5, fit_on=["s0"])
    >>> train[1]["table"].obsm["X_demo_ipca"].shape
    (36, 5)
    """
    sections = section_list(sdatas, "sdatas")
    if not sections:
        msg = "`sdatas` is empty; pass at least one section."
        raise ValueError(msg)
    _check_distinct(sections)
    n_comps = check_count(n_comps, "n_comps")
    batch_size = check_count(batch_size, "batch_size")
    tables = [check_section(sdata, table_key) for sdata in sections]
    labels = [_label(table, i) for i, table in enumerate(tables)]
    features = [
        _features(table, use_rep=use_rep, table_key=table_key, label=label)
        for table, label in zip(tables, labels, strict=True)
    ]
    n_features = _common_width(features, labels, use_rep)

    if model is None:
        fit_indices = _fit_indices(fit_on, sections, tables, labels)
        fitted_on = _sample_names([tables[i] for i in fit_indices], fit_indices)
        model = fit_incremental_pca(
            [features[i] for i in fit_indices],
            n_comps=n_comps,
            n_features=n_features,
            batch_size=batch_size,
            whiten=whiten,
        )
        model.fitted_on_ = fitted_on
        refit = True
    else:
        if fit_on is not None:
            msg = "`fit_on` chooses the sections to fit a new model on; it cannot be used with `model=`."
            raise ValueError(msg)
        _check_model(model, n_features, use_rep)
        fitted_on = getattr(model, "fitted_on_", None)
        refit = False

    reduced = [_transform(model, x, batch_size) for x in features]
    key = key_added or f"{use_rep}_ipca"
    params: dict[str, Any] = {
        "use_rep": use_rep,
        "n_comps": int(model.n_components_),
        "n_comps_requested": n_comps if refit else int(model.n_components_),
        "whiten": bool(model.whiten),
        "batch_size": batch_size,
        "fitted_on": None if fitted_on is None else list(fitted_on),
        "refit": refit,
        "explained_variance_ratio": [float(v) for v in model.explained_variance_ratio_],
    }
    for table, label, values in zip(tables, labels, reduced, strict=True):
        table.obsm[key] = values
        table.uns[key] = {"params": {**params, "fitted_on": None if fitted_on is None else list(fitted_on)}}
        log_added(f"{table_key}.obsm[{key!r}] of section {label!r}", values.shape)
        log_added(f"{table_key}.uns[{key!r}] of section {label!r}")
    return model


def _check_distinct(sections: list[SpatialData]) -> None:
    seen: dict[int, int] = {}
    for i, sdata in enumerate(sections):
        if id(sdata) in seen:
            msg = f"`sdatas[{i}]` is the same SpatialData as `sdatas[{seen[id(sdata)]}]`; pass each section once."
            raise ValueError(msg)
        seen[id(sdata)] = i


def _label(table: ad.AnnData, i: int) -> str:
    """The section's sample name(s), or ``sdatas[i]`` when the table has no ``obs["sample"]``."""
    return ", ".join(sample_names(table)) or f"sdatas[{i}]"


def _sample_names(tables: list[ad.AnnData], indices: list[int]) -> list[str]:
    names: list[str] = []
    for table, i in zip(tables, indices, strict=True):
        names.extend(n for n in (sample_names(table) or [f"sdatas[{i}]"]) if n not in names)
    return names


def _features(table: ad.AnnData, *, use_rep: str, table_key: str, label: str) -> np.ndarray:
    """``obsm[use_rep]`` as a 2-D numeric array of finite values, or an error that names the fix."""
    if use_rep not in table.obsm:
        msg = (
            f"Section {label!r} has no `obsm[{use_rep!r}]` in table {table_key!r}; obsm keys: "
            f"{list(table.obsm)}. Image features are written by `ht.pp.image_features(sdata, encoder=...)` "
            "as 'X_{encoder}' (e.g. 'X_lite0')."
        )
        raise KeyError(msg)
    values = table.obsm[use_rep]
    values = values.to_numpy() if isinstance(values, pd.DataFrame) else np.asarray(values)
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.number):
        msg = (
            f"`obsm[{use_rep!r}]` of section {label!r} must be a dense numeric array (spots x features); "
            f"got dtype {values.dtype}, shape {values.shape}."
        )
        raise ValueError(msg)
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        msg = (
            f"`obsm[{use_rep!r}]` of section {label!r} has NaN or infinite values in {int(bad.sum())} spots: "
            f"{format_ids(table.obs_names[bad])}. Recompute the features or drop those spots."
        )
        raise ValueError(msg)
    return values


def _common_width(features: list[np.ndarray], labels: list[str], use_rep: str) -> int:
    widths = {label: x.shape[1] for label, x in zip(labels, features, strict=True)}
    if len(set(widths.values())) > 1:
        msg = (
            f"`obsm[{use_rep!r}]` has a different number of features per section: {widths}. "
            "Compute the features of every section with the same encoder and settings."
        )
        raise ValueError(msg)
    width = next(iter(widths.values()))
    if width < 1:
        msg = f"`obsm[{use_rep!r}]` has no columns; compute the features first."
        raise ValueError(msg)
    return width


def _fit_indices(
    fit_on, sections: list[SpatialData], tables: list[ad.AnnData], labels: list[str]
) -> list[int]:
    """Positions in ``sdatas`` of the sections named by ``fit_on`` (objects, indices or sample names)."""
    from spatialdata import SpatialData

    if fit_on is None:
        return list(range(len(sections)))
    items = [fit_on] if isinstance(fit_on, (str, SpatialData, Integral)) else list(fit_on)
    if not items:
        msg = "`fit_on` is empty; pass the training sections (or None to fit on all of `sdatas`)."
        raise ValueError(msg)
    position = {id(sdata): i for i, sdata in enumerate(sections)}
    samples = [set(sample_names(table)) for table in tables]
    chosen: set[int] = set()
    for item in items:
        if isinstance(item, SpatialData):
            if id(item) not in position:
                msg = (
                    "`fit_on` holds a SpatialData that is not in `sdatas`; every section to fit on must "
                    f"also be passed in `sdatas` (sections: {labels})."
                )
                raise ValueError(msg)
            chosen.add(position[id(item)])
        elif isinstance(item, Integral) and not isinstance(item, bool):
            if not 0 <= item < len(sections):
                msg = f"`fit_on` index {item} is out of range for {len(sections)} sections in `sdatas`."
                raise ValueError(msg)
            chosen.add(int(item))
        elif isinstance(item, str):
            matches = [i for i, names in enumerate(samples) if item in names]
            if not matches:
                msg = (
                    f"`fit_on` names section {item!r}, which is not in `sdatas`; sections passed: {labels}. "
                    "Pass every section to fit on in `sdatas` as well."
                )
                raise ValueError(msg)
            chosen.update(matches)
        else:
            msg = (
                f"`fit_on` must hold SpatialData objects, indices or sample names; got {type(item).__name__}."
            )
            raise TypeError(msg)
    return sorted(chosen)


def fit_incremental_pca(
    arrays: list[np.ndarray], *, n_comps: int, n_features: int, batch_size: int, whiten: bool
) -> IncrementalPCA:
    """An incremental PCA fitted batch by batch over the rows of ``arrays`` (never stacked in memory)."""
    from sklearn.decomposition import IncrementalPCA

    n_rows = sum(len(x) for x in arrays)
    if n_rows < 2:
        msg = f"The `fit_on` sections hold {n_rows} spot(s); fitting a PCA needs at least 2."
        raise ValueError(msg)
    used = min(n_comps, n_features, n_rows)
    if used < n_comps:
        logger.warning(
            "n_comps=%d clipped to %d: the fit sections hold %d spots with %d features.",
            n_comps,
            used,
            n_rows,
            n_features,
        )
    if batch_size < used:
        msg = f"`batch_size={batch_size}` must be at least the number of components ({used}); raise it."
        raise ValueError(msg)
    model = IncrementalPCA(n_components=used, whiten=whiten, batch_size=batch_size)
    for batch in _batches(arrays, batch_size=batch_size, min_rows=used):
        model.partial_fit(batch)
    return model


def _batches(arrays: list[np.ndarray], *, batch_size: int, min_rows: int) -> Iterator[np.ndarray]:
    """Consecutive float64 batches of ``batch_size`` rows over the arrays stacked, without stacking them.

    A last batch shorter than ``min_rows`` is merged into the one before.
    """
    total = sum(len(x) for x in arrays)
    starts = list(range(0, total, batch_size))
    if len(starts) > 1 and total - starts[-1] < min_rows:
        starts.pop()
    offsets = np.cumsum([0] + [len(x) for x in arrays])
    for start, stop in zip(starts, [*starts[1:], total], strict=True):
        parts = [
            x[max(start - low, 0) : min(stop, low + len(x)) - low]
            for x, low in zip(arrays, offsets[:-1], strict=True)
            if low < stop and low + len(x) > start
        ]
        yield np.concatenate(parts).astype(np.float64, copy=False)


def _check_model(model, n_features: int, use_rep: str) -> None:
    if not (hasattr(model, "components_") and hasattr(model, "transform")):
        msg = (
            f"`model` must be a fitted sklearn IncrementalPCA (or PCA), got {type(model).__name__}; "
            "pass the model returned by an earlier `ht.pp.ipca` call."
        )
        raise TypeError(msg)
    if model.n_features_in_ != n_features:
        msg = (
            f"`model` was fitted on {model.n_features_in_} features, but `obsm[{use_rep!r}]` has "
            f"{n_features}; use the features the model was fitted on."
        )
        raise ValueError(msg)


def _transform(model, x: np.ndarray, batch_size: int) -> np.ndarray:
    out = np.empty((len(x), model.n_components_), dtype=np.float32)
    for start in range(0, len(x), batch_size):
        stop = start + batch_size
        out[start:stop] = model.transform(np.asarray(x[start:stop], dtype=np.float64))
    return out
