"""The steps behind ``hist2st features | fit | predict | evaluate``: read ``.zarr`` sections, call the API, write back.

Each step changes only the elements it adds (the table, patch shapes) in the section's own store, so
the image is never rewritten; the whole call is validated before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ._constants import TABLE_KEY

if TYPE_CHECKING:
    from spatialdata import SpatialData


def read_sections(paths: Sequence[str | Path]) -> list[SpatialData]:
    """The SpatialData stores at ``paths``, or an error naming the first that is not a ``.zarr`` store."""
    from .io import read_zarr

    return [read_zarr(p) for p in paths]


def save_changes(sdata: SpatialData, before: set[str]) -> list[str]:
    """Write the table and every element added since ``before`` into the section's own store, crash-safe."""
    from .io import update_zarr

    return update_zarr(sdata, [TABLE_KEY, *sorted(set(sdata.shapes) - before)])


def parse_hparams(pairs: Sequence[str]) -> dict[str, Any]:
    """``["max_epochs=10", "lr=1e-3", "validation=false"]`` -> typed keyword arguments."""
    import json

    hparams = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            msg = f"Hyper-parameters are NAME=VALUE, got {pair!r}."
            raise ValueError(msg)
        try:
            hparams[name] = json.loads(value.lower() if value.lower() in ("true", "false", "null") else value)
        except json.JSONDecodeError:
            hparams[name] = value  # a plain string, e.g. accelerator=cpu
    return hparams


def features(paths: Sequence[str | Path], **kwargs: Any) -> None:
    """:func:`hist2st_tk.pp.image_features` on each store, written back into it."""
    from . import pp

    for sdata in read_sections(paths):
        before = set(sdata.shapes)
        pp.image_features(sdata, **kwargs)
        save_changes(sdata, before)


def fit(paths: Sequence[str | Path], *, out: str | Path, **kwargs: Any) -> Path:
    """:func:`hist2st_tk.tl.fit_predictor` on the stores, saved as a model directory."""
    from . import tl

    model = tl.fit_predictor(read_sections(paths), **kwargs)
    return model.save(out)


def predict(paths: Sequence[str | Path], *, model: str | Path | None, key_added: str | None) -> None:
    """:func:`hist2st_tk.tl.predict_expression` on each store (which computes the features the model
    reads that the store lacks); written back into it."""
    from . import tl
    from .models import Predictor, default_model

    sections = read_sections(paths)
    loaded = Predictor.load(model) if model is not None else default_model()
    for sdata in sections:
        before = set(sdata.shapes)
        tl.predict_expression(sdata, loaded, key_added=key_added)
        save_changes(sdata, before)


def evaluate(paths: Sequence[str | Path], *, key: str, label_key: str | None) -> pd.DataFrame:
    """:func:`hist2st_tk.tl.evaluate` on each store (scores written back); one summary row per store."""
    from . import tl

    rows = []
    for path, sdata in zip(paths, read_sections(paths), strict=True):
        before = set(sdata.shapes)
        summary = tl.evaluate(sdata, key=key, label_key=label_key)
        save_changes(sdata, before)
        rows.append({"section": Path(path).stem, **summary})
    return pd.DataFrame(rows)
