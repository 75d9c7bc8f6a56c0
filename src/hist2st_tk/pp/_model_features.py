"""Compute the features a fitted predictor reads, exactly as it recorded them at fit time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._constants import TABLE_KEY
from .._logging import logger
from .._sdata import get_table

if TYPE_CHECKING:
    from spatialdata import SpatialData

    from ..models import Predictor


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
        A fitted predictor; ``None``: the default model shipped with the package
        (:func:`hist2st_tk.models.default_model`).
    batch_size, num_workers, device, progress
        Passed to :func:`image_features`.
    table_key
        Name of the table of spots.

    Returns
    -------
    The keys added. Writes, as the replayed calls do: ``obsm[key]`` and ``uns[key]["params"]`` per key,
    the patch shapes ``shapes["{spots}_patches_{um}um"]`` and, for context keys, the spatial graph
    (``obsp["spatial_connectivities"]``, ``obsp["spatial_distances"]``, ``uns["spatial_neighbors"]``).
    Nothing is left behind when the call fails.
    """
    from ..models import resolve

    model = resolve(model)
    table = get_table(sdata, table_key)
    recorded = model.inputs
    missing = [key for key in model.use_rep if key not in table.obsm]
    unknown = [key for key in missing if not recorded.get(key, {}).get("encoder")]
    if unknown:
        msg = (
            f"The model does not record how obsm {unknown} were made; compute them as for its training "
            "sections before predicting."
        )
        raise ValueError(msg)
    snapshot = TableSnapshot(sdata, table_key)
    added: list[str] = []
    try:
        for key in missing:
            spec = recorded[key]
            if "aggregated_from" in spec:
                base = spec["aggregated_from"]
                if base not in table.obsm:  # the context's own record names its encoder and patch too
                    base_spec = recorded.get(base, spec)
                    _image_key(sdata, base, base_spec, batch_size, num_workers, device, progress, table_key)
                    added.append(base)
                _context_key(sdata, key, base, spec["graph"], table_key)
            else:
                _image_key(sdata, key, spec, batch_size, num_workers, device, progress, table_key)
            added.append(key)
            table = get_table(sdata, table_key)
    except BaseException:
        snapshot.restore()
        raise
    if not missing:
        logger.info("the section already has every feature the %s model reads", model.method)
    return added


def _image_key(sdata, key, spec, batch_size, num_workers, device, progress, table_key) -> None:
    from ._features import image_features

    image_features(
        sdata,
        encoder=spec["encoder"],
        patch_um=float(spec["patch_um"]),
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
