"""The checks of a section's inputs against a model: its expression, its features and their records.

A model records, for each ``obsm`` key it reads, what made the features (encoder, patch size, working
resolution, width); :func:`feature_record` reads that record from a table and :func:`compare_records`
refuses features not made as those the model was trained on. :func:`expression` and
:func:`check_learnable` read and check the training targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._constants import TABLE_KEY
from .._logging import format_ids

if TYPE_CHECKING:
    from spatialdata import SpatialData

__all__ = [
    "check_learnable",
    "compare_records",
    "expression",
    "feature_params",
    "feature_record",
    "section_mpp",
]


def section_mpp(sdata: SpatialData, table) -> float | None:
    """Microns per pixel of a section's image, ``None`` when it has no image of known scale."""
    from .._scale import get_mpp
    from .._sdata import section_image_key

    key = section_image_key(sdata, table)
    try:
        return get_mpp(sdata, key)[0] if key is not None else None
    except KeyError:
        return None


def expression(table, genes: pd.Index, table_key: str = TABLE_KEY) -> np.ndarray:
    """Log-normalised expression (``X``) of ``genes``, spots x genes float32, or an error naming missing genes."""
    missing = genes.difference(table.var_names)
    if len(missing):
        msg = f"{len(missing)} genes are not in table {table_key!r}: {format_ids(missing)}."
        raise KeyError(msg)
    values = table[:, genes].X
    values = np.asarray(values.toarray() if hasattr(values, "toarray") else values, dtype=np.float32)
    if not np.isfinite(values).all():
        msg = f"The expression of table {table_key!r} holds NaN or infinite values."
        raise ValueError(msg)
    return values


def feature_params(table, key: str) -> dict:
    """``uns[key]["params"]``: how the features of ``key`` were made (empty when nothing recorded it)."""
    record = table.uns.get(key, {})
    params = record.get("params", {}) if isinstance(record, Mapping) else {}
    return params if isinstance(params, Mapping) else {}


def feature_record(table, key: str) -> dict:
    """What made the features ``obsm[key]``, as ``model.json`` records it (plain types)."""
    params = feature_params(table, key)
    encoder = params.get("encoder", {})
    record = {
        "encoder": encoder.get("name") if isinstance(encoder, Mapping) else encoder,
        "patch_um": params.get("patch_um"),
        "working_mpp": params.get("working_mpp"),
        "dim": int(np.asarray(table.obsm[key]).shape[1]),
    }
    if "aggregated_from" in params:  # neighbour context: how to rebuild it (ht.pp.model_features)
        graph = params.get("graph", {})
        record["aggregated_from"] = params["aggregated_from"]
        record["graph"] = {name: graph.get(name) for name in ("method", "n_neighs", "radius_um")}
    return record


_PROVENANCE = ("encoder", "patch_um", "working_mpp")


def compare_records(key: str, found: dict, expected: dict, *, has_params: bool, table_key: str) -> None:
    """Raise when the features of ``key`` were not made as those the model was trained on, or when the
    model records how they were made and the table does not (nothing could then be compared)."""
    recompute = (
        f"Recompute the features with `ht.pp.image_features(sdata, encoder={expected.get('encoder')!r}, "
        f"patch_um={expected.get('patch_um')!r}, working_mpp={expected.get('working_mpp')!r})`, "
        "or delete them and let `ht.tl.predict_expression` compute them."
    )
    if not has_params and any(expected.get(field) is not None for field in _PROVENANCE):
        trained_on = ", ".join(f"{field} {expected.get(field)!r}" for field in _PROVENANCE)
        msg = (
            f"obsm[{key!r}] does not match the model: table {table_key!r} records no params of it "
            f"(uns[{key!r}]['params']) but the model was trained on {trained_on}. {recompute}"
        )
        raise ValueError(msg)
    for field in (*_PROVENANCE, "dim"):
        if expected.get(field) != found[field] and (
            field == "working_mpp" or (expected.get(field) is not None and found[field] is not None)
        ):
            msg = (
                f"obsm[{key!r}] does not match the model: {field} is {found[field]!r} here but the "
                f"model was trained on {expected.get(field)!r}. {recompute}"
            )
            raise ValueError(msg)


def check_learnable(targets: list[np.ndarray], genes: pd.Index, table_key: str = TABLE_KEY) -> None:
    """Refuse training targets (per section, spots x genes) with fewer than two spots, or constant for
    every gene: a fit on them "succeeds" with NaN scores and predicts nothing."""
    n_spots = sum(len(t) for t in targets)
    if n_spots < 2:
        msg = (
            f"Cannot fit: the training sections hold {n_spots} spot{'s' * (n_spots != 1)} in all; "
            "fitting needs at least 2."
        )
        raise ValueError(msg)
    stacked = np.vstack(targets)
    if (stacked.max(axis=0) == stacked.min(axis=0)).all():
        msg = (
            f"Cannot fit: the expression is zero/constant for every gene of the panel over the {n_spots} "
            f"training spots (e.g. {genes[0]!r} is {float(stacked[0, 0])!r} everywhere). Check that `X` of "
            f"table {table_key!r} holds log-normalised expression and that `genes` names expressed genes."
        )
        raise ValueError(msg)
