"""The steps behind ``hist2st read | features | fit | predict | evaluate | slide | cohort``: read ``.zarr``
sections, call the API, write back.

Each step changes only the elements it adds (the table, patch shapes) in the section's own store, crash-safe
(:func:`hist2st_tk.io.update_zarr`), so the image is never rewritten; the whole call is validated before
anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ._constants import TABLE_KEY

if TYPE_CHECKING:
    from spatialdata import SpatialData



# the slide files a folder given to `hist2st cohort` contributes
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".scn", ".bif")


def read(kind: str, *, out: str | Path, overwrite: bool, **options: Any) -> Path:
    """``ht.io.read_{kind}(**options)`` written to the store ``out``."""
    from . import io

    readers = {"st": io.read_st, "visium": io.read_visium, "wsi": io.read_wsi}
    return io.write_zarr(readers[kind](**options), out, overwrite=overwrite)


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
    from . import models, tl

    sections = read_sections(paths)
    loaded = models.resolve(model)
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


def slide(
    source: str | Path,
    *,
    out: str | Path | None,
    model: str | Path | None,
    mpp: float | None,
    tile_um: float,
    min_tissue: float,
    batch_tiles: int,
    checkpoint_dir: str | Path | None,
) -> Path:
    """Tissue tiles of a slide (:func:`hist2st_tk.pp.tile_tissue`) and their streamed predictions
    (:func:`hist2st_tk.tl.predict_slide`).

    A slide file is read with :func:`hist2st_tk.io.read_wsi` and the result, without the image (its
    ``attrs`` name the slide file), written to ``out``; a store is updated in place unless ``out`` is given.
    """
    from . import io, models, pp, tl
    from .tl._cohort import slide_results

    source = Path(source)
    is_store = source.is_dir()
    if not is_store and out is None:
        msg = f"Give --out, the .zarr store to write the tiles and predictions of the slide {str(source)!r} into."
        raise ValueError(msg)
    if is_store and mpp is not None:
        msg = f"--mpp applies to a slide file; the store {str(source)!r} records its scale (see `ht.io.set_mpp`)."
        raise ValueError(msg)
    predictor = models.resolve(model)
    if not is_store:
        result = slide_results(
            source,
            predictor,
            mpp=mpp,
            tile_um=tile_um,
            min_tissue=min_tissue,
            batch_tiles=batch_tiles,
            checkpoint_dir=checkpoint_dir,
        )
        return io.write_zarr(result, out)
    sdata = io.read_zarr(source)
    before = set(sdata.shapes)
    pp.tile_tissue(sdata, tile_um=tile_um, min_tissue=min_tissue)
    if sdata.tables[TABLE_KEY].n_obs:
        tl.predict_slide(sdata, predictor, batch_tiles=batch_tiles, checkpoint_dir=checkpoint_dir)
    if out is None:
        save_changes(sdata, before)
        return source
    return io.write_zarr(sdata, out)


def cohort(slides: Sequence[str | Path], *, out: str | Path, model: str | Path | None, **options: Any) -> pd.DataFrame:
    """:func:`hist2st_tk.tl.predict_cohort` on the slide files ``slides`` (a folder gives its slide files)."""
    from . import models, tl

    return tl.predict_cohort(slide_files(slides), models.resolve(model), out_dir=out, **options)


def slide_files(paths: Sequence[str | Path]) -> list[Path]:
    """``paths`` with every folder replaced by the slide files in it (:data:`SLIDE_SUFFIXES`), sorted."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in SLIDE_SUFFIXES)
            if not found:
                msg = f"No slide file ({', '.join(SLIDE_SUFFIXES)}) in the folder {str(path)!r}."
                raise FileNotFoundError(msg)
            files.extend(found)
        else:
            files.append(path)
    return files
