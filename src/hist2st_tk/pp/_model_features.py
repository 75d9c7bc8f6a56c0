"""Compute the features a fitted predictor reads, exactly as it recorded them at fit time."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._constants import DEFAULT_MODEL_DIR, TABLE_KEY
from .._docs import doc_params
from .._logging import logger
from .._sdata import get_table
from .._section import check_section

if TYPE_CHECKING:
    from spatialdata import SpatialData

    from ..models import Predictor


@doc_params
def model_features(
    sdata: SpatialData,
    model: Predictor | None = None,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str = "auto",
    progress: bool = True,
    table_key: str = TABLE_KEY,
) -> list[str]:
    """Compute every ``obsm`` feature key that ``model`` reads and the section lacks.

    A predictor records, for each feature key it was trained on, the encoder and patch size that made
    it and, for neighbourhood context, the spatial graph and the key it averages
    (:func:`aggregate_neighbors`). This replays those calls on a new section, so that
    ``ht.tl.predict_expression(sdata, model)`` can run. Keys already present are left as they are
    (and checked against the model when it predicts).

    Parameters
    ----------
    sdata
        The section (its image needs a known microns per pixel).
    model
        A fitted predictor, or its ``feature_recipe`` (plain data: ``method``, ``use_rep``, ``inputs``);
        ``None``: the default model shipped with the package (its recipe is read from its ``model.json``).
    batch_size, num_workers, device, progress
        Passed to :func:`image_features`.
    {table_key}

    Returns
    -------
    The keys added. Writes, as the replayed calls do: ``obsm[key]`` and ``uns[key]["params"]`` per key,
    the patch shapes ``shapes["{spots}_patches_{um}um"]`` and, for context keys, the spatial graph
    (``obsp["spatial_connectivities"]``, ``obsp["spatial_distances"]``, ``uns["spatial_neighbors"]``).
    Nothing is left behind when the call fails.
    """
    recipe = feature_recipe(model)
    table = check_section(sdata, table_key, spots=True)
    recorded = recipe["inputs"]
    missing = [key for key in recipe["use_rep"] if key not in table.obsm]
    unknown = [key for key in missing if not recorded.get(key, {}).get("encoder")]
    if unknown:
        msg = (
            f"The model does not record how obsm {unknown} were made; compute them as for its training "
            "sections before predicting."
        )
        raise ValueError(msg)
    snapshot = TableSnapshot(sdata, table_key)
    contexts = [key for key in missing if "aggregated_from" in recorded[key]]
    images = {key: recorded[key] for key in missing if key not in contexts}
    for key in contexts:  # the key a context averages; its record, else the context's, names how it is made
        base = recorded[key]["aggregated_from"]
        if base not in table.obsm and base not in images:
            images[base] = recorded.get(base, recorded[key])
    options = {"batch_size": batch_size, "num_workers": num_workers, "device": device, "progress": progress}
    try:
        for base, keys in _image_calls(images).items():
            _image_keys(sdata, base, keys, images, options, table_key)
        for key in contexts:
            spec = recorded[key]
            _context_key(sdata, key, spec["aggregated_from"], spec["graph"], table_key)
    except BaseException:
        snapshot.restore()
        raise
    if not missing:
        logger.info("the section already has every feature the %s model reads", recipe["method"])
    return [*images, *contexts]


def feature_recipe(model: Predictor | Mapping[str, Any] | None) -> dict[str, Any]:
    """The feature recipe of ``model`` (see :func:`model_features`), checked to name ``use_rep`` and ``inputs``."""
    if model is None:
        config = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())
        return {"method": config["method"], "use_rep": config["use_rep"], "inputs": config["inputs"]}
    recipe = getattr(model, "feature_recipe", model)
    if not isinstance(recipe, Mapping) or not {"use_rep", "inputs"} <= set(recipe):
        msg = (
            "`model` must be a fitted predictor (ht.tl.fit_predictor or ht.models.load), its `feature_recipe`, "
            f"or None for the default model; got {model!r}."
        )
        raise TypeError(msg)
    if getattr(model, "is_fitted", True) is False:
        msg = f"`model` must be a fitted predictor; the {recipe.get('method')!r} model is not fitted."
        raise TypeError(msg)
    return {
        "method": recipe.get("method", "given"),
        "use_rep": list(recipe["use_rep"]),
        "inputs": dict(recipe["inputs"]),
    }


def _image_calls(specs: dict[str, dict]) -> dict[str | None, list[str]]:
    """The image feature keys grouped into as few :func:`image_features` calls as possible.

    Keys named ``{base}_{um}um`` of one encoder, working resolution and ``base`` are made by one
    multi-scale call (each spot's image region is read once for all sizes), grouped under ``base``;
    every other key is a call of its own (grouped under ``None``).
    """
    groups: dict[tuple, list[str]] = {}
    for key, spec in specs.items():
        suffix = f"_{float(spec['patch_um']):g}um"
        base = key.removesuffix(suffix) if key.endswith(suffix) else None
        groups.setdefault((base, spec["encoder"], spec.get("working_mpp")), []).append(key)
    calls: dict[str | None, list[str]] = {}
    for (base, _, _), members in groups.items():
        if base is not None and len(members) > 1:
            calls[base] = members
        else:
            calls.setdefault(None, []).extend(members)
    return calls


def _image_keys(sdata, base: str | None, keys: list[str], specs: dict, options: dict, table_key: str) -> None:
    """``keys`` made as ``specs`` record: one multi-scale call named ``base``, or one call per key without."""
    if base is not None:
        sizes = [float(specs[key]["patch_um"]) for key in keys]
        _image_key(sdata, base, {**specs[keys[0]], "patch_um": sizes}, table_key=table_key, **options)
        return
    for key in keys:
        _image_key(sdata, key, specs[key], table_key=table_key, **options)


def _image_key(sdata, key, spec, *, batch_size, num_workers, device, progress, table_key) -> None:
    from ._features import image_features

    image_features(
        sdata,
        encoder=spec["encoder"],
        patch_um=spec["patch_um"],
        working_mpp=spec.get("working_mpp"),
        key_added=key,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        progress=progress,
        table_key=table_key,
    )


def _context_key(sdata, key, base, graph, table_key) -> None:
    from ._graph import spatial_graph
    from ._neighbors import aggregate_neighbors

    method = graph.get("method") or "radius"
    options = {"radius_um": graph["radius_um"]} if method == "radius" else {"n_neighs": graph["n_neighs"]}
    spatial_graph(sdata, method=method, table_key=table_key, **options)
    aggregate_neighbors(sdata, use_rep=base, key_added=key, table_key=table_key)


class TableSnapshot:
    """What feature calls may change (obsm, obsp, uns of the table; shapes), to put back after a failure."""

    def __init__(self, sdata, table_key: str):
        table = get_table(sdata, table_key)
        self.sdata, self.table_key = sdata, table_key
        self.obsm, self.obsp, self.uns = dict(table.obsm), dict(table.obsp), dict(table.uns)
        self.shapes = set(sdata.shapes)

    def restore(self) -> None:
        table = get_table(self.sdata, self.table_key)
        for mapping, saved in ((table.obsm, self.obsm), (table.obsp, self.obsp), (table.uns, self.uns)):
            for name in set(mapping) - set(saved):
                del mapping[name]
            mapping.update(saved)
        for name in set(self.sdata.shapes) - self.shapes:
            del self.sdata.shapes[name]
