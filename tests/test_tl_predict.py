"""Predictor life cycle (fit, predict, save, load) and the tl functions around it, on synthetic sections."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hist2st_tk as ht
from hist2st_tk._sdata import with_table
from hist2st_tk.models import Predictor, RidgePredictor


def _section(seed: int, sample: str, patient: str | None = None):
    """A synthetic section whose features are its hidden latents plus noise (what a good encoder would see)."""
    sdata = ht.datasets.synthetic(n_spots=64, n_genes=12, seed=seed, sample=sample, patient=patient)
    table = sdata["table"]
    rng = np.random.default_rng(seed)
    latents = table.obs[["latent_colour", "latent_texture"]].to_numpy(dtype=np.float32)
    table.obsm["X_test"] = np.hstack([latents, rng.normal(size=(table.n_obs, 6)).astype(np.float32) * 0.1])
    table.uns["X_test"] = {"params": {"encoder": {"name": "test"}, "patch_um": 56.0}}
    return sdata


@pytest.fixture
def sections():
    return {f"s{i}": _section(i, f"s{i}", patient=f"p{i // 2}") for i in range(4)}


def test_ridge_fit_predict_learns_the_signal(sections):
    train = [sections[s] for s in ("s0", "s1", "s2")]
    model = ht.tl.fit_predictor(train, method="ridge", genes=6, use_rep="X_test")
    assert isinstance(model, RidgePredictor) and len(model.genes) == 6
    assert model.trained_on == ["s0", "s1", "s2"]
    predicted = model.predict(sections["s3"])
    assert predicted.shape == (64, 6) and list(predicted.index) == list(sections["s3"]["table"].obs_names)
    summary = ht.tl.evaluate(sections["s3"], key=_write(sections["s3"], model))
    assert summary["pearson"] > 0.5


def _write(sdata, model) -> str:
    ht.tl.predict_expression(sdata, model)
    return f"predicted_{model.method}"


def test_predict_expression_writes_the_design_keys(sections):
    model = ht.tl.fit_predictor([sections["s0"]], genes=["gene_000", "gene_003"], use_rep="X_test")
    table = sections["s3"]["table"]
    returned = ht.tl.predict_expression(sections["s3"], model)
    assert isinstance(table.obsm["predicted_ridge"], pd.DataFrame)
    pd.testing.assert_frame_equal(table.obsm["predicted_ridge"], returned)
    layer = table.layers["predicted_ridge"]
    assert layer.shape == table.shape
    assert np.isnan(layer[:, table.var_names.get_loc("gene_001")]).all()
    np.testing.assert_allclose(layer[:, table.var_names.get_loc("gene_003")], returned["gene_003"])
    assert table.uns["predicted_ridge"]["params"]["trained_on"] == ["s0"]


def test_predict_on_a_table_without_genes_makes_the_panel_var(sections):
    import anndata as ad
    from spatialdata.models import TableModel

    model = ht.tl.fit_predictor([sections["s0"]], genes=3, use_rep="X_test")
    slide = sections["s3"]
    table = slide["table"]
    empty = ad.AnnData(
        obs=table.obs.copy(), obsm={"X_test": table.obsm["X_test"]}, uns={"X_test": table.uns["X_test"]}
    )
    slide.tables["table"] = TableModel.parse(
        empty, region="s3_spots", region_key="region", instance_key="spot_id"
    )
    ht.tl.predict_expression(slide, model, key_added="predicted")
    new = slide["table"]
    assert list(new.var_names) == list(model.genes) and new.X.shape == (64, 3)
    assert "predicted" in new.obsm and new.uns["spatialdata_attrs"]["region"] == "s3_spots"


def test_save_load_gives_identical_predictions(sections, tmp_path):
    model = ht.tl.fit_predictor([sections["s0"], sections["s1"]], genes=5, use_rep="X_test")
    path = model.save(tmp_path / "model")
    loaded = ht.models.load(path)
    pd.testing.assert_frame_equal(loaded.predict(sections["s3"]), model.predict(sections["s3"]))
    assert loaded.trained_on == ["s0", "s1"] and loaded.n_parameters == model.n_parameters > 0
    # predict_expression also takes the directory
    ht.tl.predict_expression(sections["s2"], path)
    assert "predicted_ridge" in sections["s2"]["table"].obsm
    with pytest.raises(FileExistsError, match="already exists"):
        model.save(path)


def test_loading_broken_model_directories(sections, tmp_path):
    model = ht.tl.fit_predictor([sections["s0"]], genes=4, use_rep="X_test")
    path = model.save(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="No model directory"):
        Predictor.load(tmp_path / "nowhere")
    weights = path / "weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        Predictor.load(path)
    (path / "weights.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks \['weights.safetensors'\]"):
        Predictor.load(path)
    other = model.save(tmp_path / "m2")
    (other / "model.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="is not a hist2st_tk predictor"):
        Predictor.load(other)


def test_model_refuses_features_of_another_encoder(sections):
    model = ht.tl.fit_predictor([sections["s0"]], genes=4, use_rep="X_test")
    sections["s3"]["table"].uns["X_test"]["params"]["patch_um"] = 112.0
    before = dict(sections["s3"]["table"].obsm)
    with pytest.raises(ValueError, match=r"patch_um is 112.0 here but the model was trained on 56.0"):
        ht.tl.predict_expression(sections["s3"], model)
    assert dict(sections["s3"]["table"].obsm).keys() == before.keys()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "nope"}, ValueError, r"Unknown method 'nope'; available methods: \[.*'ridge'"),
        ({"genes": ["gene_000", "NOPE1"]}, KeyError, "not in every training section: 'NOPE1'"),
        ({"use_rep": "X_missing"}, KeyError, r"no obsm\['X_missing'\].*image_features"),
        ({"n_comps": 4, "bogus": 1}, TypeError, r"Unknown hyper-parameters for method 'ridge': \['bogus'\]"),
        ({"genes": None}, KeyError, "select_genes"),
    ],
)
def test_fit_predictor_bad_input(sections, kwargs, error, match):
    with pytest.raises(error, match=match):
        ht.tl.fit_predictor([sections["s0"]], **{"use_rep": "X_test", "genes": 4, **kwargs})


def test_nan_features_are_refused(sections):
    sections["s0"]["table"].obsm["X_test"][3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values in 1 spots"):
        ht.tl.fit_predictor([sections["s0"]], genes=4, use_rep="X_test")


def test_predict_expression_without_model_uses_the_default_one(sections):
    table = sections["s0"]["table"]
    before = set(table.obsm)
    with pytest.raises(KeyError, match=r"no obsm\['X_lite0_56um'\], which this 'ridge' model reads.*model_features"):
        ht.tl.predict_expression(sections["s0"], compute_features=False)
    assert set(table.obsm) == before


def test_evaluate_writes_scores_and_checks_keys(sections):
    model = ht.tl.fit_predictor([sections["s0"]], genes=4, use_rep="X_test")
    key = _write(sections["s1"], model)
    table = sections["s1"]["table"]
    summary = ht.tl.evaluate(sections["s1"], key=key)
    assert set(summary) >= {"pearson", "spearman", "mae", "mse", "r2", "spot_pearson"}
    assert summary["n_genes"] == 4 and table.uns[key]["metrics"] == summary
    scored = table.var[f"{key}_pearson"].notna()
    assert scored.sum() == 4 and set(table.var_names[scored]) == set(model.genes)
    assert table.obs[f"{key}_spot_pearson"].notna().all()
    observed = table[:, model.genes].X
    observed = observed.toarray() if hasattr(observed, "toarray") else observed
    r = np.corrcoef(table.obsm[key][model.genes[0]], observed[:, 0])[0, 1]
    assert table.var.loc[model.genes[0], f"{key}_pearson"] == pytest.approx(r)
    with pytest.raises(KeyError, match=r"No predictions obsm\['predicted_x'\].*\['predicted_ridge'\]"):
        ht.tl.evaluate(sections["s1"], key="predicted_x")
    with pytest.raises(KeyError, match="were not predicted"):
        ht.tl.evaluate(sections["s1"], key=key, genes=["gene_999"])


def test_cross_validate_protocols(sections):
    result = ht.tl.cross_validate(
        sections,
        method="ridge",
        protocol="leave-one-patient-out",
        use_rep="X_test",
        panels={"top4": ("top_mean", 4)},
    )
    assert set(result.folds["fold"]) == {"patient p0", "patient p1"}
    assert len(result.folds) == 4  # two held-out sections per fold
    assert set(result.scores.columns) == {"fold", "held_out", "panel", "gene", "metric", "value"}
    assert set(result.predictions["patient p0"]) == {"s0", "s1"}
    summary = result.summary()
    assert list(summary.index) == ["top4"] and summary.loc["top4", "pearson"] > 0.3
    explicit = ht.tl.cross_validate(
        list(sections.values()),
        protocol=[(["s0", "s1"], ["s3"])],
        use_rep="X_test",
        panels={"p": ("top_var", 3)},
    )
    assert explicit.protocol == "explicit" and list(explicit.folds["held_out"]) == ["s3"]


@pytest.mark.parametrize(
    ("protocol", "match"),
    [
        ("her2st6-loso", r"needs the sections \['B4'"),
        ("nope", "Unknown protocol 'nope'"),
        ([(["s0"], ["s0"])], "trains and tests on the same sections"),
        ([(["s0"], ["s9"])], r"needs the sections \['s9'\]"),
    ],
)
def test_cross_validate_bad_protocols(sections, protocol, match):
    with pytest.raises(ValueError, match=match):
        ht.tl.cross_validate(sections, protocol=protocol, use_rep="X_test")


def test_nan_targets_are_refused(sections):
    table = sections["s0"]["table"]
    table.X = table.X.toarray() if hasattr(table.X, "toarray") else table.X
    table.X[0, table.var_names.get_loc("gene_000")] = np.inf
    with pytest.raises(ValueError, match="expression of table 'table' holds NaN or infinite values"):
        ht.tl.fit_predictor([sections["s0"]], genes=["gene_000", "gene_001"], use_rep="X_test")


def test_centred_model_ignores_a_shift_of_the_whole_section(sections, tmp_path):
    train = [sections[s] for s in ("s0", "s1", "s2")]
    test = sections["s3"]
    centred = ht.tl.fit_predictor(train, method="ridge", genes=6, use_rep="X_test", center=True)
    plain = ht.tl.fit_predictor(train, method="ridge", genes=6, use_rep="X_test")
    before_centred, before_plain = centred.predict(test), plain.predict(test)
    test["table"].obsm["X_test"] = test["table"].obsm["X_test"] + 3.0  # e.g. a darker stain everywhere
    np.testing.assert_allclose(centred.predict(test), before_centred, atol=1e-4)
    assert np.abs(plain.predict(test) - before_plain).to_numpy().max() > 0.1
    reloaded = Predictor.load(centred.save(tmp_path / "centred"))
    assert reloaded.center is True
    np.testing.assert_allclose(reloaded.predict(test), before_centred, atol=1e-4)


def test_stnet_refuses_centring():
    with pytest.raises(TypeError, match="drop `use_rep` and `center`"):
        ht.models.STNetPredictor(center=True)


@pytest.mark.real_data
def test_panel_genes_a_held_out_section_lacks_are_left_out_alike(her2st, caplog):
    """C2's panel holds CHGA, which B4 does not measure: cross_validate and evaluate both skip it, warning."""
    b4, c2 = her2st("B4"), her2st("C2")
    assert "CHGA" not in b4["table"].var_names and "CHGA" in c2["table"].var_names
    folds = [("C2->B4", ["C2"], ["B4"])]
    with caplog.at_level("WARNING", logger="hist2st_tk"):
        cv = ht.tl.cross_validate({"B4": b4, "C2": c2}, method="ridge", protocol=folds, use_rep="spatial")
    assert "are not measured in table 'table' and are not scored: " in caplog.text and "'CHGA'" in caplog.text
    scored = cv.scores.query("panel == 'top50var'")["gene"].unique()
    assert "CHGA" not in scored
    assert cv.folds.set_index("panel").loc["top50var", "n_genes"] == len(scored) < 50
    test = with_table(b4, "table", b4["table"].copy())  # the loader's sections are shared by the session
    test["table"].obsm["predicted_cv"] = cv.predictions["C2->B4"]["B4"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="hist2st_tk"):
        summary = ht.tl.evaluate(test, key="predicted_cv")
    assert "'CHGA'" in caplog.text
    assert summary["n_genes"] == cv.predictions["C2->B4"]["B4"].shape[1] - 1
