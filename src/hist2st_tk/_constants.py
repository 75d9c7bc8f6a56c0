"""Names shared by every part of the package (docs/data_model.md, docs/outputs.md).

Every reader and writer of an element name or a table key goes through these helpers, so that
a key is spelled in one place only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

#: Name of the table that annotates the spots.
TABLE_KEY = "table"
#: ``obs`` column naming the shapes element a row annotates (spatialdata's ``region_key``).
REGION_KEY = "region"
#: ``obs`` column holding the spot id, equal to the index of the spots shapes element.
INSTANCE_KEY = "spot_id"
#: Coordinate system of images and spots: the pixel space of the H&E image.
COORDINATE_SYSTEM = "global"
#: Key of this package's entry in ``SpatialData.attrs``.
ATTRS_KEY = "hist2st_tk"
#: ``obs`` columns of every section's table: the section (sample) and the patient it comes from.
SAMPLE_KEY = "sample"
PATIENT_KEY = "patient"
#: ``obs`` column of tumor calls or labels (boolean), and of the predicted probability of tumor.
TUMOR_KEY = "tumor"
TUMOR_SCORE_KEY = "tumor_score"
#: ``obsm`` key of the spot centres in image pixels (scanpy's and squidpy's).
SPATIAL_KEY = "spatial"
#: ``obsp`` keys of the spatial graph (squidpy's).
CONNECTIVITIES_KEY = "spatial_connectivities"
DISTANCES_KEY = "spatial_distances"
#: Suffix of the mean features of a spot's spatial neighbours (:func:`hist2st_tk.pp.aggregate_neighbors`).
NEIGHBORS_SUFFIX = "_nbr"
#: ``var`` column marking the gene panel (:func:`hist2st_tk.pp.select_genes`).
GENES_KEY = "hist2st_genes"
#: The default model shipped inside the package: ``model.json``, ``weights.safetensors``, ``MODEL_CARD.md``.
DEFAULT_MODEL_DIR = Path(__file__).parent / "models" / "default_her2st"
#: Predictions are ``obsm`` / ``layers`` / ``uns`` entries named ``predicted_{method}`` by default.
PREDICTED_PREFIX = "predicted_"

MppSource = Literal["st_grid", "visium_spot", "slide_metadata", "user"]
MPP_SOURCES: tuple[str, ...] = ("st_grid", "visium_spot", "slide_metadata", "user")

#: Legacy ST array: 100 um spots on a 200 um centre-to-centre grid.
ST_SPOT_DIAMETER_UM = 100.0
ST_SPOT_PITCH_UM = 200.0
#: 10x Visium: 55 um spots.
VISIUM_SPOT_DIAMETER_UM = 55.0


def predicted_key(method: str) -> str:
    """Default name of the predictions of ``method``."""
    return f"{PREDICTED_PREFIX}{method}"


def image_key(sample: str) -> str:
    """Name of the H&E image element of ``sample``."""
    return f"{sample}_he"


def spots_key(sample: str) -> str:
    """Name of the spot (or tile) shapes element of ``sample``."""
    return f"{sample}_spots"
