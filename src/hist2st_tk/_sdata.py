"""Look-ups on a SpatialData that every namespace needs, each with an error that names the fix."""

from __future__ import annotations

import copy as _copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._constants import PATIENT_KEY, PREDICTED_PREFIX, SAMPLE_KEY, TABLE_KEY, image_key, spots_key
from ._logging import format_ids
from ._validate import check_spatialdata

if TYPE_CHECKING:
    import anndata as ad
    import xarray as xr
    from spatialdata import SpatialData


def get_table(sdata: SpatialData, table_key: str = TABLE_KEY) -> ad.AnnData:
    """The table ``table_key``; a TypeError when ``sdata`` is not a SpatialData, a KeyError naming the
    tables that exist and the calls that make one when it lacks that table."""
    check_spatialdata(sdata)
    if table_key not in sdata.tables:
        made_by = (
            "the readers (`ht.io.read_st`, `ht.io.read_visium`, `ht.datasets.her2st`) write it with the "
            "spots; for an H&E-only slide `ht.pp.tile_tissue(sdata)` does"
            if not sdata.tables
            else "pass `table_key=` to name one of them"
        )
        msg = f"No table {table_key!r} in the SpatialData (tables: {list(sdata.tables)}); {made_by}."
        raise KeyError(msg)
    return sdata.tables[table_key]


def instance_key(table: ad.AnnData) -> str:
    """The ``obs`` column holding the spot (or tile) ids of ``table``, as spatialdata records it."""
    from spatialdata.models import get_table_keys

    return get_table_keys(table)[2]


def spots_key_of(table: ad.AnnData) -> str:
    """The one shapes element a table annotates."""
    from spatialdata.models import get_table_keys

    region, _, _ = get_table_keys(table)
    regions = [region] if isinstance(region, str) else list(region)
    if len(regions) != 1:
        msg = f"The table annotates {len(regions)} elements {regions}; pass `spots_key` to choose one."
        raise ValueError(msg)
    return regions[0]


def resolve_image_key(sdata: SpatialData, image_key: str | None) -> str:
    """``image_key`` checked to exist, or the only image of the SpatialData."""
    check_spatialdata(sdata)
    if not sdata.images:
        msg = (
            "The SpatialData has no image; read the H&E with `ht.io.read_wsi`, `ht.io.read_st` or "
            "`ht.io.read_visium` (a store of a slide's results holds none: `attrs['hist2st_tk']['slide']` "
            "names its slide file)."
        )
        raise ValueError(msg)
    if image_key is None:
        if len(sdata.images) != 1:
            msg = f"Pass `image_key`: the SpatialData has {len(sdata.images)} images {list(sdata.images)}."
            raise ValueError(msg)
        return next(iter(sdata.images))
    if image_key not in sdata.images:
        msg = f"No image {image_key!r} in the SpatialData; images: {list(sdata.images)}."
        raise KeyError(msg)
    return image_key


def image_levels(image) -> list[xr.DataArray]:
    """Pyramid levels of an image element, full resolution first."""
    if hasattr(image, "children") and image.children:
        return [
            image[name].ds["image"] for name in sorted(image.children, key=lambda n: int(n[len("scale") :]))
        ]
    return [image]


def values_per_spot(
    sdata: SpatialData, key: str, *, table_key: str = TABLE_KEY, layer: str | None = None
) -> pd.Series:
    """Values of an ``obs`` column or a gene (from ``X`` or ``layers[layer]``), indexed like the spots.

    Rows are matched to the spots through the table's instance key, never by row order.
    """
    table = get_table(sdata, table_key)
    if key in table.obs.columns:
        series = table.obs[key]
    elif key in table.var_names:
        if layer is not None and layer not in table.layers:
            msg = f"No layer {layer!r} in table {table_key!r}; layers: {list(table.layers)}."
            raise KeyError(msg)
        column = table[:, key].layers[layer] if layer is not None else table[:, key].X
        values = np.asarray(column.todense() if hasattr(column, "todense") else column).ravel()
        series = pd.Series(values, index=table.obs_names, name=key)
    else:
        msg = (
            f"{key!r} is neither an obs column nor a gene of table {table_key!r}. "
            f"obs columns: {list(table.obs.columns)}; genes e.g. {list(table.var_names[:5])}."
        )
        raise KeyError(msg)
    return rows_to_spots(table, series, sdata.shapes[spots_key_of(table)])


def rows_to_spots(table: ad.AnnData, values: pd.DataFrame | pd.Series, spots: pd.DataFrame):
    """Rows of ``values`` (in table row order) re-indexed like ``spots`` through the table's instance key."""
    from spatialdata.models import get_table_keys

    _, _, instance_key = get_table_keys(table)
    return values.set_axis(pd.Index(table.obs[instance_key].to_numpy())).reindex(spots.index)


def section_image_key(sdata: SpatialData, table: ad.AnnData) -> str | None:
    """The image of the section whose spots ``table`` annotates (``"{sample}_spots"`` -> ``"{sample}_he"``).

    ``None`` when that cannot be told, which lets :func:`~hist2st_tk.io.get_mpp` pick the only image.
    """
    try:
        spots = spots_key_of(table)
    except (KeyError, ValueError, TypeError):
        return None
    suffix = spots_key("")
    if spots.endswith(suffix):
        key = image_key(spots[: -len(suffix)])
        if key in sdata.images:
            return key
    return None


def spot_centres(sdata: SpatialData, table: ad.AnnData) -> tuple[str, np.ndarray]:
    """The shapes element the table annotates and its spot centres, ``(n_obs, 2)`` x/y, in table row order.

    Rows are matched to spots through the table's instance key, never by position.
    """
    from spatialdata.models import get_table_keys

    key = spots_key_of(table)
    if key not in sdata.shapes:
        msg = (
            f"The table annotates shapes {key!r}, which the SpatialData lacks; shapes: {list(sdata.shapes)}."
        )
        raise KeyError(msg)
    _, _, instance_key = get_table_keys(table)
    shapes = sdata.shapes[key]
    ids = pd.Index(table.obs[instance_key].to_numpy())
    missing = ids.difference(shapes.index)
    if len(missing):
        msg = f"{len(missing)} table rows have no spot in shapes {key!r}, e.g. {list(missing[:5])}."
        raise KeyError(msg)
    centroids = shapes.geometry.loc[ids].centroid
    return key, np.column_stack([centroids.x.to_numpy(), centroids.y.to_numpy()])


def with_table(sdata: SpatialData, table_key: str, table: ad.AnnData) -> SpatialData:
    """A new SpatialData sharing every element of ``sdata`` except the table ``table_key``."""
    from spatialdata import SpatialData

    return SpatialData(
        images=dict(sdata.images),
        labels=dict(sdata.labels),
        points=dict(sdata.points),
        shapes=dict(sdata.shapes),
        tables={**dict(sdata.tables), table_key: table},
        attrs=_copy.deepcopy(dict(sdata.attrs)),
    )


#: Prefix of the predictions :func:`~hist2st_tk.tl.predict_expression` writes into ``obsm``.


def written_by_prediction(table: ad.AnnData, key: str) -> bool:
    """Whether ``key`` names predictions (its ``uns`` entry records the method that made them)."""
    entry = table.uns.get(key)
    return isinstance(entry, dict) and isinstance(entry.get("params"), dict) and "method" in entry["params"]


def prediction_keys(table: ad.AnnData) -> list[str]:
    """``obsm`` keys holding predictions (DataFrames named ``predicted_*``), oldest first."""
    return [
        str(k)
        for k in table.obsm
        if str(k).startswith(PREDICTED_PREFIX) and isinstance(table.obsm[k], pd.DataFrame)
    ]


def predictions(
    table: ad.AnnData, key: str | None, table_key: str = TABLE_KEY, *, latest: bool = False
) -> tuple[str, pd.DataFrame]:
    """The predictions key and its spots x genes DataFrame.

    ``key=None`` takes the table's only predictions, or with ``latest=True`` the most recently added
    (obsm keeps insertion order); several without ``latest`` is an error asking for ``key=``.
    """
    found = prediction_keys(table)
    if key is None:
        if not found:
            msg = (
                f"Table {table_key!r} has no predictions: run `ht.tl.predict_expression(sdata, model)` "
                "first (it writes obsm['predicted_*'])."
            )
            raise KeyError(msg)
        if len(found) > 1 and not latest:
            msg = f"Table {table_key!r} has ambiguous predictions: it has several {found}: pass `key=` to choose one."
            raise KeyError(msg)
        key = found[-1]
    if key not in table.obsm:
        msg = (
            f"No predictions obsm[{key!r}] in table {table_key!r}; predictions there: {found}. "
            "Run `ht.tl.predict_expression(sdata, model)` first."
        )
        raise KeyError(msg)
    frame = table.obsm[key]
    if not isinstance(frame, pd.DataFrame):
        msg = f"obsm[{key!r}] must be a DataFrame of spots x genes (as written by predict_expression)."
        raise TypeError(msg)
    return key, frame


def named_sections(sdatas, table_key: str = TABLE_KEY) -> dict[str, SpatialData]:
    """Sections by name: a dict is taken as it is; a SpatialData or a sequence of them is named by
    ``obs["sample"]`` of each table (``section_{i}`` without one). Two sections of one name are refused."""
    from spatialdata import SpatialData

    if isinstance(sdatas, SpatialData):
        sdatas = [sdatas]
    if isinstance(sdatas, Mapping):
        return dict(sdatas)
    sections = {}
    for i, sd in enumerate(sdatas):
        check_spatialdata(sd, f"sdatas[{i}]")
        name = section_name(get_table(sd, table_key), i)
        if name in sections:
            msg = f"Two sections are named {name!r} (obs['sample']); pass a dict name -> SpatialData."
            raise ValueError(msg)
        sections[name] = sd
    return sections


def patients(sections: Mapping[str, SpatialData], table_key: str = TABLE_KEY) -> dict[str, str]:
    """The patient of each section (``obs["patient"]`` of its table; the section's name without one)."""
    patients = {}
    for name, sd in sections.items():
        obs = get_table(sd, table_key).obs
        patients[name] = str(obs[PATIENT_KEY].iloc[0]) if PATIENT_KEY in obs and len(obs) else name
    return patients


def section_list(value, what: str) -> list[SpatialData]:
    """``value`` (a SpatialData or a sequence of them) as a list, or a TypeError naming the argument ``what``."""
    from spatialdata import SpatialData

    if isinstance(value, SpatialData):
        return [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        check_spatialdata(value, what, or_sequence=True)  # raises, naming the readers
    sections = list(value)
    for i, section in enumerate(sections):
        check_spatialdata(section, f"{what}[{i}]")
    return sections


def common_genes(
    frames: Sequence[pd.DataFrame], genes: Sequence[str] | None = None, *, of: str = "sections"
) -> list[str]:
    """Genes (columns) predicted in every frame, in the first frame's order; or ``genes``, checked to be.

    ``of`` names the frames in the errors: some of ``genes`` missing from a frame, or no gene shared.
    """
    shared = [g for g in frames[0].columns if all(g in f.columns for f in frames[1:])]
    if genes is not None:
        missing = pd.Index(genes).difference(shared)
        if len(missing):
            msg = f"{len(missing)} genes are not predicted in every {of.removesuffix('s')}: {format_ids(missing)}."
            raise KeyError(msg)
        shared = list(genes)
    if not shared:
        msg = f"The {of}' predictions share no gene; predict them with one model."
        raise ValueError(msg)
    return shared


def sample_names(table: ad.AnnData) -> list[str]:
    """The distinct ``obs["sample"]`` names of a table, in order of appearance; empty without the column."""
    if SAMPLE_KEY not in table.obs.columns:
        return []
    return [str(s) for s in pd.unique(table.obs[SAMPLE_KEY].astype(str))]


def without_images(sdata: SpatialData) -> SpatialData:
    """A SpatialData of ``sdata``'s labels, shapes, tables and attrs, without its images (a slide's
    results, stored beside the slide file that ``attrs`` names instead of a copy of its pixels)."""
    from spatialdata import SpatialData

    return SpatialData(
        labels=dict(sdata.labels),
        shapes=dict(sdata.shapes),
        tables=dict(sdata.tables),
        attrs=dict(sdata.attrs),
    )


def section_name(table, index: int) -> str:
    """The ``obs["sample"]`` name of a section's table, or ``"section_{index}"`` without one."""
    names = sample_names(table)
    return names[0] if len(names) == 1 else f"section_{index}"
