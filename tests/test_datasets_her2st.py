from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import requests

import hist2st_tk as ht
from hist2st_tk.datasets._her2st import HER2ST_COMMIT, _cluster_names

# Where each B4 file lives in the public data repository (shared/data/README.md)
B4_REMOTE = {
    "data/ST-imgs/B/B4/BT10737_D2_HE.jpg": "B4/BT10737_D2_HE.jpg",
    "data/ST-cnts/B4.tsv.gz": "B4/B4_counts.tsv.gz",
    "data/ST-spotfiles/B4_selection.tsv": "B4/B4_selection.tsv",
    "res/ST-cluster/lbl/B4-cluster-annotation.tsv.gz": "B4/B4_cluster_annotation.tsv.gz",
    "res/ST-cluster/motivation.csv": "cluster_motivation.csv",
}
RAW_PREFIX = f"https://raw.githubusercontent.com/almaan/her2st/{HER2ST_COMMIT}/"


@pytest.mark.real_data
@pytest.mark.parametrize("section", ht.datasets.HER2ST_SECTIONS)
def test_every_section_reads_with_its_scale_and_labels(her2st, section):
    sdata = her2st(section)
    table = sdata.tables["table"]
    assert set(sdata.images) == {f"{section}_he"} and set(sdata.shapes) == {f"{section}_spots"}
    assert 150 <= table.n_obs <= 700 and table.n_vars > 14_000
    assert "ERBB2" in table.var_names
    assert table.obs["patient"].unique().tolist() == [section[0]]
    mpp, source = ht.io.get_mpp(sdata)
    assert source == "st_grid" and 0.65 < mpp < 0.73  # about 290 px per 200 um grid step
    assert table.obs["tumor"].dtype == "boolean"
    assert table.obs["tumor"].sum() > 0 and (~table.obs["tumor"].dropna()).sum() > 0
    assert table.obs["region_label"].notna().mean() > 0.3


@pytest.mark.real_data
@pytest.mark.parametrize("section", ["B4", "C3"])
def test_spots_sit_on_tissue(her2st, section):
    """Pixels under spots are darker (stained tissue) than the slide's white border."""
    sdata = her2st(section)
    level = sdata.images[f"{section}_he"]["scale2"].ds["image"]
    grey = np.asarray(level.mean("c").values)
    factor = sdata.images[f"{section}_he"]["scale0"].ds["image"].sizes["x"] / level.sizes["x"]
    xy = (sdata.tables["table"].obsm["spatial"] / factor).astype(int)
    under_spots = grey[xy[:, 1], xy[:, 0]]
    border = np.concatenate(
        [grey[:20].ravel(), grey[-20:].ravel(), grey[:, :20].ravel(), grey[:, -20:].ravel()]
    )
    assert np.median(under_spots) < np.median(border) - 30


@pytest.mark.real_data
def test_tumor_spots_express_more_erbb2(her2st):
    """HER2-positive tumours: the data authors' cancer clusters have higher ERBB2."""
    table = her2st("C3").tables["table"]
    erbb2 = np.asarray(table[:, "ERBB2"].X.todense()).ravel()
    tumor = table.obs["tumor"].to_numpy(dtype=float, na_value=np.nan)
    assert erbb2[tumor == 1].mean() > erbb2[tumor == 0].mean() + 0.5


@pytest.mark.real_data
def test_cluster_names_parsed_from_the_irregular_csv(data_root):
    parsed = _cluster_names(data_root / "her2st" / "cluster_motivation.csv")
    clean = pd.read_csv(data_root / "her2st" / "cluster_names.csv")
    assert parsed["annotated_as"].tolist() == clean["annotated_as"].tolist()
    assert parsed["cluster"].tolist() == clean["cluster"].tolist()
    assert parsed["tumor"].tolist() == clean["tumor"].astype("boolean").tolist()


def _mirror_downloader(root, *, corrupt=False, log=None):
    """A pooch downloader serving the repository paths from the local copy of the data."""

    def download(url, output_file, pooch_instance, check_only=False):
        assert url.startswith(RAW_PREFIX), url
        remote = url[len(RAW_PREFIX) :]
        if log is not None:
            log.append(remote)
        data = (root / B4_REMOTE[remote]).read_bytes()
        with open(output_file, "wb") as out:
            out.write(data[:-10] + b"0123456789" if corrupt else data)

    return download


@pytest.mark.real_data
def test_download_is_pinned_and_checked(data_root, tmp_path):
    requested = []
    sdata = ht.datasets.her2st(
        "B4", data_dir=tmp_path, downloader=_mirror_downloader(data_root / "her2st", log=requested)
    )
    assert sorted(requested) == sorted(B4_REMOTE)
    assert (tmp_path / "B4" / "B4_counts.tsv.gz").is_file()
    assert sdata.tables["table"].n_obs > 250
    # a second call reads the cache and downloads nothing
    requested.clear()
    ht.datasets.her2st(
        "B4", data_dir=tmp_path, downloader=_mirror_downloader(data_root / "her2st", log=requested)
    )
    assert requested == []


@pytest.mark.real_data
def test_corrupted_download_is_refused_and_not_kept(data_root, tmp_path):
    with pytest.raises(ValueError, match="Checksum mismatch for HER2ST file 'B4/BT10737_D2_HE.jpg'"):
        ht.datasets.her2st(
            "B4", data_dir=tmp_path, downloader=_mirror_downloader(data_root / "her2st", corrupt=True)
        )
    assert not (tmp_path / "B4" / "BT10737_D2_HE.jpg").exists()


@pytest.mark.real_data
def test_corrupted_local_file_is_replaced_by_a_good_download(data_root, tmp_path):
    (tmp_path / "B4").mkdir()
    for local in B4_REMOTE.values():
        (tmp_path / local).parent.mkdir(exist_ok=True)
        shutil.copy(data_root / "her2st" / local, tmp_path / local)
    (tmp_path / "B4" / "B4_selection.tsv").write_text("x\ty\n")
    requested = []
    ht.datasets.her2st(
        "B4", data_dir=tmp_path, downloader=_mirror_downloader(data_root / "her2st", log=requested)
    )
    assert requested == ["data/ST-spotfiles/B4_selection.tsv"]


def test_offline_download_says_what_to_do(tmp_path):
    def offline(url, output_file, pooch_instance, check_only=False):
        raise requests.ConnectionError("no network")

    with pytest.raises(
        OSError, match=r"could not be downloaded.*Offline\? .*HIST2ST_TK_DATA to the folder that contains her2st/"
    ):
        ht.datasets.her2st("C2", data_dir=tmp_path, downloader=offline)


def test_unknown_section():
    with pytest.raises(ValueError, match=r"Unknown HER2ST section 'A1'.*\['B4', 'C2'"):
        ht.datasets.her2st("A1")
