"""The HER2-positive breast cancer ST sections of Andersson et al. (2021) with full-resolution H&E."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from .._constants import TABLE_KEY
from .._logging import log_added

if TYPE_CHECKING:
    from collections.abc import Callable

    from spatialdata import SpatialData

#: Commit of github.com/almaan/her2st the downloads are pinned to.
HER2ST_COMMIT = "85df7411b987a7dec3feff9718b869a7a82091ec"
_RAW_URL = "https://raw.githubusercontent.com/almaan/her2st/{commit}/{path}"

#: Sections with a full-resolution H&E image, and the image's path under ``data/ST-imgs``.
_IMAGES = {
    "B4": "B/B4/BT10737_D2_HE.jpg",
    "C2": "C/C2/5714_HE_BT_C2.jpg",
    "C3": "C/C3/5714_HE_BT_D1.jpg",
    "C4": "C/C4/5714_HE_BT_D2.jpg",
    "C5": "C/C5/5714_HE_BT_E1.jpg",
    "C6": "C/C6/5714_HE_BT_E2.jpg",
}
HER2ST_SECTIONS: tuple[str, ...] = tuple(_IMAGES)

#: sha256 of every file, keyed by its path in the local cache layout.
_SHA256 = {
    "B4/B4_cluster_annotation.tsv.gz": "ea7ce6d9630921a9b0d03178988192b7c71baec19eb183ebdfdb991e47d690e4",
    "B4/B4_counts.tsv.gz": "e38231c2a38c9bc7e6d550eec0e527c1869ee0e525fc913e708d1323c34f5ebb",
    "B4/B4_selection.tsv": "192b46f3ca414c85753a01a4fb5760a697ca6c0a1aadb949c4687cc6efa9faa0",
    "B4/BT10737_D2_HE.jpg": "3cb165614ce2a13426381e450220dccac980cc9bda6a90fb041c28ca0e2c753d",
    "C2/5714_HE_BT_C2.jpg": "26e2f73ae840cdd46c5bba405aae181f13a56a376b9848dff23f7a9c5de7f19e",
    "C2/C2_cluster_annotation.tsv.gz": "3211500325b1be1cd2be7480f2b094a48647fc25df4d8fe6afb8c48c15650ece",
    "C2/C2_counts.tsv.gz": "c1c59ea6cffae36b9ecb561b8e2a97e3aa5f4085f748e991a0e330ed9d09773d",
    "C2/C2_selection.tsv": "235b5f4306b3b57c628ffc82c98c7109602474fbcc79a917b9c50517f99b6b1c",
    "C3/5714_HE_BT_D1.jpg": "0005a92674014d473040a28f0afca89ce5fa5c44019b479b638ceb3272ceb568",
    "C3/C3_cluster_annotation.tsv.gz": "a1522a14855bc2022ccbb9ea9cbae59837cbcd310bc4c02727ae6bfa37e6d369",
    "C3/C3_counts.tsv.gz": "e00c55a3eb9caac5d9c71b8906aae8be8b38f93e23938f4a0ebee17683ef6a2a",
    "C3/C3_selection.tsv": "7fd76c13370b7804ac3bb377b846d22485cf9223f9dd8dfc25be06e5aaf65755",
    "C4/5714_HE_BT_D2.jpg": "f40607eb1d5f0d125decd71c48b0c5d29cf6776ad92297fd185631208c82d6f2",
    "C4/C4_cluster_annotation.tsv.gz": "a5cc7a3a40983a21ea8400145c80a7dc5b13e7468b987ec0610f4c2123978c71",
    "C4/C4_counts.tsv.gz": "33201f76d41d7131dc600a0f87d9a70383af3503e81698b4d11e6f2e8d73e9da",
    "C4/C4_selection.tsv": "47e79f3b9dbfa3a8c18af9e948ba7ba4bf0a75ea1b4c292bc714ced7d0917d4c",
    "C5/5714_HE_BT_E1.jpg": "34028ea41e376396b50c42b0a11a7e689c85be4a8022e668d0a09cc128c04c65",
    "C5/C5_cluster_annotation.tsv.gz": "5929e9183e09717891fce94a71ec94551a86d5267ebb085067ac1d71894bc4ea",
    "C5/C5_counts.tsv.gz": "c0f310315ca6110d74dbdf7011e5b42432ba0b8eb5f001824764911988f39338",
    "C5/C5_selection.tsv": "2114cc3b4da759772112897f1e247d5443c9f8c808e6a9a952eb4fda379a194c",
    "C6/5714_HE_BT_E2.jpg": "dddd87232589648861a9b6776dc1749be8306213f6589aeef0e805fb2b1ee263",
    "C6/C6_cluster_annotation.tsv.gz": "bc1234a7a05073a65017f7c0c101547ae2d3c9aa37b895a27dafd9c33842f9d2",
    "C6/C6_counts.tsv.gz": "60478b0d2411501866685f41312c65c6591e499d64d5b719be8ee9bab25c9bc8",
    "C6/C6_selection.tsv": "efdbbc6759c6af43baa966505c31705f09c087c1dccf1ea3e0d1db7b55717117",
    "cluster_motivation.csv": "b7701748b5de40e63771f032a864b5812f9b2aa638459db2257af4ac519f8234",
}


class _File(NamedTuple):
    local: str  # path below the data folder
    remote: str  # path in the data repository


def _section_files(section: str) -> dict[str, _File]:
    image = _IMAGES[section]
    return {
        "image": _File(f"{section}/{Path(image).name}", f"data/ST-imgs/{image}"),
        "counts": _File(f"{section}/{section}_counts.tsv.gz", f"data/ST-cnts/{section}.tsv.gz"),
        "spots": _File(f"{section}/{section}_selection.tsv", f"data/ST-spotfiles/{section}_selection.tsv"),
        "clusters": _File(
            f"{section}/{section}_cluster_annotation.tsv.gz",
            f"res/ST-cluster/lbl/{section}-cluster-annotation.tsv.gz",
        ),
        "motivation": _File("cluster_motivation.csv", "res/ST-cluster/motivation.csv"),
    }


def her2st(
    section: str,
    *,
    data_dir: str | Path | None = None,
    downloader: Callable | None = None,
) -> SpatialData:
    """One HER2-positive breast cancer section of the HER2ST data set, with region labels.

    Six sections have a full-resolution H&E image: ``"B4"`` (patient B) and ``"C2"``-``"C6"``
    (patient C, consecutive sections). Legacy ST: 100 um spots on a 200 um grid.

    Files are read from ``data_dir``, else from ``$HIST2ST_TK_DATA/her2st`` when that folder exists,
    else downloaded once from the public data repository (github.com/almaan/her2st, pinned to commit
    ``85df741``) into the user cache. Every file is checked against its sha256.

    Source: Andersson, A. et al. Spatial deconvolution of HER2-positive breast cancer delineates
    tumor-associated cell type interactions. *Nature Communications* 12, 6012 (2021).
    Please cite it when you use these data.

    Parameters
    ----------
    section
        One of ``"B4"``, ``"C2"``, ``"C3"``, ``"C4"``, ``"C5"``, ``"C6"``.
    data_dir
        Folder holding ``<section>/`` subfolders and ``cluster_motivation.csv``; missing files are
        downloaded into it.
    downloader
        A pooch downloader to use instead of the default HTTP one (for proxies and tests).

    Returns
    -------
    The SpatialData of :func:`hist2st_tk.io.read_st` (``obs["patient"]`` is ``"B"`` or ``"C"``), plus

    - ``table.obs["region_label"]``: the data authors' annotation of the spot's expression cluster
      (e.g. ``"cancer 1"``, ``"immune : B/plasma cells, APC"``, ``"adipose"``); these labels come from
      expression clustering, not from a pathologist;
    - ``table.obs["tumor"]``: nullable boolean, True for clusters annotated as cancer, NA for unknown.
    """
    from ..io import read_st

    if section not in _IMAGES:
        msg = f"Unknown HER2ST section {section!r}; sections with a full-resolution image: {list(_IMAGES)}."
        raise ValueError(msg)
    root = _data_root(data_dir)
    paths = {
        role: _fetch(file, root, downloader=downloader) for role, file in _section_files(section).items()
    }
    sdata = read_st(paths["counts"], paths["spots"], paths["image"], sample=section, patient=section[0])
    table = sdata.tables[TABLE_KEY]
    labels = _region_labels(paths["clusters"], _cluster_names(paths["motivation"]), patient=section[0])
    region_label = labels["annotated_as"].reindex(table.obs_names)
    table.obs["region_label"] = pd.Categorical(region_label)
    table.obs["tumor"] = labels["tumor"].reindex(table.obs_names).astype("boolean").array
    log_added("table.obs['region_label']", (table.n_obs,))
    log_added("table.obs['tumor']", (table.n_obs,))
    return sdata


def _data_root(data_dir: str | Path | None) -> Path:
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get("HIST2ST_TK_DATA")
    if env and (Path(env) / "her2st").is_dir():
        return Path(env) / "her2st"
    import pooch

    return Path(pooch.os_cache("hist2st_tk")) / "her2st"


def _fetch(file: _File, root: Path, *, downloader: Callable | None = None) -> Path:
    """The local path of ``file`` below ``root``, downloaded and checked against its sha256 first."""
    import pooch
    import requests

    target = root / file.local
    url = _RAW_URL.format(commit=HER2ST_COMMIT, path=file.remote)
    expected = _SHA256[file.local]
    try:
        path = pooch.retrieve(
            url,
            known_hash=f"sha256:{expected}",
            fname=target.name,
            path=target.parent,
            downloader=downloader,
            progressbar=False,
        )
    except ValueError as err:
        if "hash" not in str(err).lower():
            raise
        msg = (
            f"Checksum mismatch for HER2ST file {file.local!r} from {url}: expected sha256 {expected}. "
            "The download is corrupted or incomplete; nothing was kept, retry later."
        )
        raise ValueError(msg) from err
    except (requests.RequestException, OSError) as err:
        msg = (
            f"HER2ST file {file.local!r} is not in {str(root)!r} and could not be downloaded from {url} "
            f"({type(err).__name__}: {err}). Offline? Put the files there, or set HIST2ST_TK_DATA to the "
            "folder that contains her2st/ (not to her2st/ itself), or pass `data_dir=` the folder holding "
            "the section folders (B4/, C2/, ...)."
        )
        raise OSError(msg) from err
    return Path(path)


def _cluster_names(motivation_csv: Path) -> pd.DataFrame:
    """Parse the data authors' ``motivation.csv``: one row per (patient, cluster) with its annotation.

    The file is irregular CSV: the annotation itself may contain unquoted commas, so it is the text
    between the cluster number and the ``Marker genes ...`` motivation (or the next empty field).
    """
    rows = []
    for line in Path(motivation_csv).read_text().splitlines()[1:]:
        if not line.strip():
            continue
        patient, cluster, rest = line.split(",", 2)
        marker = re.search(r",\s*Marker genes", rest)
        annotated_as = (rest[: marker.start()] if marker else rest.split(",", 1)[0]).strip()
        rows.append((patient.strip(), int(cluster), annotated_as))
    names = pd.DataFrame(rows, columns=["patient", "cluster", "annotated_as"])
    is_known = names["annotated_as"] != "unknown"
    names["tumor"] = pd.array(
        np.where(is_known, names["annotated_as"].str.startswith("cancer"), None), dtype="boolean"
    )
    return names


def _region_labels(annotation: Path, names: pd.DataFrame, *, patient: str) -> pd.DataFrame:
    """Cluster annotation per spot id ``"{x}x{y}"``: columns ``annotated_as`` and ``tumor``."""
    spots = pd.read_csv(annotation, sep="\t", index_col=0)
    spots.index = pd.Index([f"{x}x{y}" for x, y in zip(spots["x"], spots["y"], strict=True)])
    patient_names = names[names["patient"] == patient].set_index("cluster")
    return patient_names.reindex(spots["label"].to_numpy()).set_index(spots.index)[["annotated_as", "tumor"]]
