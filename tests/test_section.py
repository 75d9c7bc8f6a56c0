"""The data contract of a section: every public entry point checks its SpatialData the same way."""

from __future__ import annotations

import inspect

import anndata as ad
import numpy as np
import pytest
from spatialdata import SpatialData
from spatialdata.models import TableModel

import hist2st_tk as ht
from hist2st_tk._section import check_section, made_by

#: Public functions whose first argument is a section (or sections), with their other required arguments.
#: A new such function must be added here: the test below fails until it is.
ENTRY_POINTS = {
    "io.get_mpp": {},
    "io.set_mpp": {"image_key": "x_he", "mpp": 1.0},
    "io.update_zarr": {"elements": ["table"]},
    "io.write_zarr": {"path": "unused"},
    "pp.aggregate_neighbors": {"use_rep": "X_a"},
    "pp.fit_autoencoder": {"path": "unused"},
    "pp.fourier_coords": {},
    "pp.fourier_features": {},
    "pp.image_features": {},
    "pp.ipca": {"use_rep": "X_a"},
    "pp.model_features": {},
    "pp.normalize_stain": {},
    "pp.patches": {},
    "pp.perturb": {},
    "pp.select_genes": {},
    "pp.spatial_graph": {},
    "pp.stain_normalizer": {},
    "pp.stain_reference": {},
    "pp.tile_tissue": {},
    "pp.tissue_mask": {},
    "tl.cluster_agreement": {"cluster_key": "a", "label_key": "b"},
    "tl.compare_regions": {},
    "tl.cross_validate": {},
    "tl.evaluate": {"key": "predicted_ridge"},
    "tl.fit_predictor": {},
    "tl.fit_tumor_classifier": {},
    "tl.predict_expression": {},
    "tl.predict_slide": {"model": None},
    "tl.survival_table": {},
    "tl.tumor_regions": {},
    "tl.tumor_score_auc": {"label_key": "tumor"},
    "tl.warn_if_unsuitable": {"model": None},
    "pl.predicted_vs_observed": {"genes": ["ERBB2"]},
    "pl.spatial": {"color": "ERBB2"},
    "pl.spatial_expression": {"genes": ["ERBB2"]},
    "pl.tumor_map": {},
}
SECTION_ARGUMENTS = ("sdata", "sdatas", "sdata_or_list")


def _public_section_functions() -> list[str]:
    names = []
    for namespace in ("io", "pp", "tl", "pl"):
        module = getattr(ht, namespace)
        for name in module.__all__:
            function = getattr(module, name)
            parameters = list(inspect.signature(function).parameters) if inspect.isfunction(function) else []
            if parameters and parameters[0] in SECTION_ARGUMENTS:
                names.append(f"{namespace}.{name}")
    return sorted(names)


def _call(name: str, section, tmp_path):
    namespace, function = name.split(".")
    kwargs = dict(ENTRY_POINTS[name])
    if "path" in kwargs:
        kwargs["path"] = tmp_path / "model"
    if "model" in kwargs:
        kwargs["model"] = ht.models.default_model()
    return getattr(getattr(ht, namespace), function)(section, **kwargs)


def test_every_entry_point_is_listed():
    assert _public_section_functions() == sorted(ENTRY_POINTS)


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_an_anndata_is_refused_naming_the_readers(name, tmp_path):
    table = ad.AnnData(np.ones((3, 2), dtype=np.float32))
    with pytest.raises(TypeError, match=r"SpatialData") as error:
        _call(name, table, tmp_path)
    assert "ht.io.read_st" in str(error.value)


#: Entry points that need no table or image of a section: an empty SpatialData is theirs to take.
NO_ELEMENTS = {"io.get_mpp", "io.set_mpp", "io.update_zarr", "io.write_zarr"}


@pytest.mark.parametrize("name", sorted(set(ENTRY_POINTS) - NO_ELEMENTS))
def test_an_empty_spatialdata_is_refused_naming_the_call_that_fills_it(name, tmp_path):
    with pytest.raises((KeyError, ValueError), match=r"No table 'table'|no image") as error:
        _call(name, SpatialData(), tmp_path)
    assert "`ht.io.read_" in str(error.value)


@pytest.fixture
def section() -> SpatialData:
    return ht.datasets.synthetic(n_spots=16, n_genes=4)


def test_check_section_returns_the_table(section):
    table = check_section(section, spots=True, obs=["sample"], obsm=["spatial"])
    assert table is section["table"]


@pytest.mark.parametrize(
    ("needs", "message"),
    [
        ({"obsm": ["X_lite0"]}, r"has no obsm\['X_lite0'\]: `ht.pp.image_features\(sdata, encoder=...\)`"),
        ({"obsm": ["X_lite0_112um_nbr"]}, r"`ht.pp.aggregate_neighbors\(sdata, use_rep='X_lite0_112um'\)`"),
        ({"obsm": ["predicted_ridge"]}, r"`ht.tl.predict_expression\(sdata, model\)`"),
        ({"obsp": ["spatial_connectivities"]}, r"has no obsp.*`ht.pp.spatial_graph\(sdata, ...\)`"),
        (
            {"obs": ["tumor_score"]},
            r"has no obs\['tumor_score'\]: `ht.tl.tumor_regions\(sdata\)`.*obs keys: \[",
        ),
    ],
)
def test_check_section_names_the_missing_key_and_its_call(section, needs, message):
    before = section["table"].copy()
    with pytest.raises(KeyError, match=message):
        check_section(section, **needs)
    assert section["table"].obs.equals(before.obs) and list(section["table"].obsm) == list(before.obsm)


def test_check_section_wants_the_spots_the_table_annotates(section):
    with pytest.warns(UserWarning, match="not present"):  # spatialdata's own warning
        orphan = SpatialData(images=dict(section.images), tables={"table": section["table"]})
    with pytest.raises(
        KeyError, match=r"annotates the shapes \['synthetic_spots'\], which the SpatialData lacks"
    ):
        check_section(orphan, spots=True)
    plain = SpatialData(
        shapes=dict(section.shapes), tables={"table": TableModel.parse(ad.AnnData(np.ones((2, 1))))}
    )
    with pytest.raises(ValueError, match=r"does not say which spots it annotates.*TableModel.parse"):
        check_section(plain, spots=True)


def test_check_section_names_the_tables_there_are(section):
    with pytest.raises(
        KeyError, match=r"No table 'spots' in the SpatialData \(tables: \['table'\]\); pass `table_key="
    ):
        check_section(section, "spots")


def test_made_by_falls_back_to_saying_nothing_writes_it():
    assert made_by("obs", "my_column") == "no function of hist2st_tk writes it"
    assert "ht.pp.ipca" in made_by("obsm", "X_lite0_ipca")
