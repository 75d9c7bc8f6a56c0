"""Patient tables of predicted expression, their writers, and the cross-validated Cox model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hist2st_tk as ht

KEY = "predicted_test"


def _section(seed: int, sample: str, patient: str):
    sdata = ht.datasets.synthetic(n_spots=36, n_genes=5, seed=seed, sample=sample, patient=patient)
    table = sdata["table"]
    table.obsm[KEY] = table.to_df()
    return sdata


@pytest.fixture
def sections():
    return [_section(i, f"s{i}", patient=f"p{i // 2}") for i in range(4)]


@pytest.fixture
def clinical():
    return pd.DataFrame({"patient": ["p1", "p0", "p9"], "time": [3.0, 5.0, 1.0], "event": [1, 0, 1]})


def _spots(sections, patient: str) -> pd.DataFrame:
    """Every spot of one patient: predictions and labels side by side."""
    frames = [
        sd["table"].obsm[KEY].join(sd["table"].obs[["tumor"]])
        for sd in sections
        if sd["table"].obs["patient"].iloc[0] == patient
    ]
    return pd.concat(frames)


def test_survival_table_mean_joins_the_clinical_table(sections, clinical):
    table = ht.tl.survival_table(sections, clinical, signatures={"pair": ["gene_000", "gene_001", "ABSENT"]})
    assert list(table.index) == ["p0", "p1"] and table.index.name == "patient"  # p9 has no section
    spots = _spots(sections, "p1")
    assert table.loc["p1", "n_sections"] == 2 and table.loc["p1", "n_spots"] == 72
    assert table.loc["p1", "gene_003"] == pytest.approx(spots["gene_003"].mean())
    assert table.loc["p1", "tumor_fraction"] == pytest.approx(spots["tumor"].astype(float).mean())
    pair = spots[["gene_000", "gene_001"]].mean(axis=1).mean()
    assert table.loc["p1", "pair_score"] == pytest.approx(pair)
    assert table.loc["p0", "time"] == 5.0 and table.loc["p1", "event"] == 1


def test_survival_table_topk_and_tumor_mean(sections):
    topk = ht.tl.survival_table(sections, aggregate="topk", top_k=3, genes=["gene_002"])
    spots = _spots(sections, "p0")
    assert list(topk.columns) == ["n_sections", "n_spots", "tumor_fraction", "gene_002"]
    assert topk.loc["p0", "gene_002"] == pytest.approx(spots["gene_002"].nlargest(3).mean())
    tumor = ht.tl.survival_table(sections, aggregate="tumor_mean")
    inside = spots[spots["tumor"].astype(bool)]
    assert tumor.loc["p0", "gene_004"] == pytest.approx(inside["gene_004"].mean())
    # sections as pseudo-patients
    per_section = ht.tl.survival_table(sections, patient_key="sample")
    assert list(per_section.index) == ["s0", "s1", "s2", "s3"] and (per_section["n_spots"] == 36).all()


def test_survival_table_bad_input(sections, clinical):
    with pytest.raises(KeyError, match=r"1 patients of the data are not in the clinical table: 'p1'"):
        ht.tl.survival_table(sections, clinical[clinical["patient"] != "p1"])
    with pytest.raises(KeyError, match=r"`clinical` lacks the survival columns \['time'\]"):
        ht.tl.survival_table(sections, clinical.drop(columns="time"))
    with pytest.raises(ValueError, match="must hold 0/1"):
        ht.tl.survival_table(sections, clinical.assign(event=[2, 0, 1]))
    with pytest.raises(ValueError, match="Unknown `aggregate` 'max'"):
        ht.tl.survival_table(sections, aggregate="max")
    with pytest.raises(KeyError, match=r"1 genes are not predicted in every section: 'ERBB2'"):
        ht.tl.survival_table(sections, genes=["ERBB2"])
    with pytest.raises(ValueError, match="No gene of signature 'x' is predicted"):
        ht.tl.survival_table(sections, signatures={"x": ["ERBB2"]})
    del sections[0]["table"].obs["tumor"]
    with pytest.raises(KeyError, match="needs obs\\['tumor'\\] in every section"):
        ht.tl.survival_table(sections, aggregate="tumor_mean")
    del sections[0]["table"].obsm[KEY]
    with pytest.raises(KeyError, match="has no predictions"):
        ht.tl.survival_table(sections)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_write_survival_table_round_trips(sections, clinical, tmp_path, suffix):
    table = ht.tl.survival_table(sections, clinical)
    path = ht.tl.write_survival_table(table, tmp_path / "out" / f"patients{suffix}")
    back = pd.read_csv(path, index_col=0) if suffix == ".csv" else pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, table, check_dtype=False, check_index_type=False)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left


def test_write_survival_table_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"use a path ending in \.csv, \.parquet or \.pq"):
        ht.tl.write_survival_table(pd.DataFrame({"a": [1]}), tmp_path / "patients.xlsx")
    with pytest.raises(TypeError, match="must be a pandas DataFrame"):
        ht.tl.write_survival_table({"a": [1]}, tmp_path / "patients.csv")
    assert not list(tmp_path.iterdir())


def test_cox_on_rossi_recidivism():
    """lifelines' Rossi data (432 released prisoners, arrest within a year): a known, modest signal."""
    from lifelines.datasets import load_rossi

    rossi = load_rossi()
    result = ht.tl.cox(rossi, duration_col="week", event_col="arrest", n_splits=5, n_bootstrap=100)
    assert isinstance(result, ht.tl.CoxResult)
    assert result.n == 432 and result.n_events == 114 and len(result.fold_cindex) == 5
    assert result.covariates == ["fin", "age", "race", "wexp", "mar", "paro", "prio"]
    assert 0.6 < result.cindex_mean < 0.75
    assert result.cindex_ci[0] < result.cindex_oof < result.cindex_ci[1]
    assert list(result.summary.index) == result.covariates
    assert result.oof_risk.index.equals(rossi.index) and (result.oof_risk > 0).all()
    assert result.summary.loc["prio", "coef"] > 0 and result.summary.loc["age", "coef"] < 0


def test_cox_bad_input():
    from lifelines.datasets import load_rossi

    rossi = load_rossi()
    with pytest.raises(KeyError, match=r"lacks the survival columns \['time', 'event'\]"):
        ht.tl.cox(rossi)
    with pytest.raises(ValueError, match="holds no event"):
        ht.tl.cox(rossi.assign(arrest=0), duration_col="week", event_col="arrest")
    with pytest.raises(ValueError, match="`n_splits` must lie between 2"):
        ht.tl.cox(rossi.head(4), duration_col="week", event_col="arrest", n_splits=5)
    with pytest.raises(KeyError, match=r"missing: \['ERBB2'\]"):
        ht.tl.cox(rossi, duration_col="week", event_col="arrest", covariates=["ERBB2"])


@pytest.mark.real_data
def test_her2st_sections_as_pseudo_patients(her2st):
    """The plumbing end to end on the six HER2ST sections as patients, with made-up survival times."""
    from spatialdata import SpatialData

    genes = ["ERBB2", "GNAS", "ACTB"]
    sections = []
    for name in ("B4", "C2", "C3", "C4", "C5", "C6"):
        source = her2st(name)
        sdata = SpatialData(shapes=dict(source.shapes), tables={"table": source["table"].copy()})
        sdata["table"].obsm["predicted_measured"] = sdata["table"][:, genes].to_df()
        sections.append(sdata)
    table = ht.tl.survival_table(sections, patient_key="sample", genes=genes)
    assert list(table.index) == ["B4", "C2", "C3", "C4", "C5", "C6"]
    assert table["n_spots"].tolist() == [283, 187, 180, 184, 181, 178]
    assert table.loc["B4", "tumor_fraction"] == pytest.approx(17 / 114)  # 17 cancer of 114 labelled spots
    # made-up outcome: more ERBB2, earlier event
    clinical = pd.DataFrame(
        {"time": 10 - table["ERBB2"].rank().to_numpy(), "event": [1, 1, 0, 1, 1, 1]}, index=table.index
    )
    joined = ht.tl.survival_table(sections, clinical, patient_key="sample", genes=genes)
    result = ht.tl.cox(joined, covariates=["ERBB2"], penalizer=1.0, n_splits=2, n_bootstrap=20)
    assert result.n == 6 and result.n_events == 5 and np.isfinite(result.cindex_oof)
    assert list(result.oof_risk.index) == list(table.index)


def test_time_col_is_a_deprecated_name_of_duration_col():
    import hist2st_tk as ht

    sdata = ht.datasets.synthetic(n_spots=16, n_genes=4, seed=0, sample="s1", patient="p1")
    sdata["table"].obsm["predicted_ridge"] = sdata["table"].to_df().copy()
    clinical = pd.DataFrame({"patient": ["p1"], "months": [12.0], "event": [1]})
    with pytest.warns(FutureWarning, match="`time_col` is deprecated; pass `duration_col`"):
        old = ht.tl.survival_table(sdata, clinical, time_col="months")
    new = ht.tl.survival_table(sdata, clinical, duration_col="months")
    pd.testing.assert_frame_equal(old, new)
    assert new.loc["p1", "months"] == 12.0
