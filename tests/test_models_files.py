"""Model directories: the model.json schema, the tensors checked at load, bit-identical save -> load."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import hist2st_tk as ht
from hist2st_tk.encoders import EncoderSpec, register_encoder
from hist2st_tk.models import Predictor, available_methods, method_class
from hist2st_tk.models._schema import check, hparams_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GENES = ["gene_000", "gene_001", "gene_002", "gene_003"]


def _section(seed: int, sample: str):
    """Synthetic section with two 6-wide feature keys (noisy latents) and its grid graph."""
    sdata = ht.datasets.synthetic(n_spots=36, n_genes=6, seed=seed, sample=sample)
    table = sdata["table"]
    rng = np.random.default_rng(seed)
    latents = table.obs[["latent_colour", "latent_texture"]].to_numpy(dtype=np.float32)
    for key in ("X_test", "X_more"):
        noise = rng.normal(size=(table.n_obs, 4)).astype(np.float32)
        table.obsm[key] = np.hstack([latents, noise]) + rng.normal(scale=0.2, size=(table.n_obs, 6)).astype(
            np.float32
        )
        table.uns[key] = {"params": {"encoder": {"name": "test"}, "patch_um": 56.0}}
    ht.pp.spatial_graph(sdata, method="grid", n_neighs=4)
    return sdata


@pytest.fixture(scope="module")
def sections():
    return [_section(i, f"s{i}") for i in range(3)]


@pytest.fixture(scope="module")
def ridge(sections):
    """A small ridge model (3 components of 6 features, 4 genes) with its novelty model."""
    return method_class("ridge")(use_rep="X_test", n_comps=3).fit(sections[:2], genes=GENES)


@pytest.fixture
def saved(ridge, tmp_path):
    return ridge.save(tmp_path / "ridge")


def _edit_config(path, change):
    file = path / "model.json"
    config = json.loads(file.read_text())
    replaced = change(config)
    file.write_text(json.dumps(config if replaced is None else replaced))


def _edit_weights(path, change):
    from safetensors.torch import load_file, save_file

    file = str(path / "weights.safetensors")
    tensors = load_file(file)
    change(tensors)
    save_file(tensors, file)


def _set(*keys, value):
    def change(config):
        for key in keys[:-1]:
            config = config[key]
        config[keys[-1]] = value

    return change


def _delete(*keys):
    def change(config):
        for key in keys[:-1]:
            config = config[key]
        del config[keys[-1]]

    return change


# -- model.json ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda c: [c], r"must hold a JSON object \(the fields of a model\), got a list"),
        (_delete("method"), r"field 'method' is missing"),
        (_delete("hparams"), r"field 'hparams' is missing"),
        (_set("format_version", value="1"), r"field 'format_version' must be an int, got '1' \(str\)"),
        (_set("seed", value="abc"), r"field 'seed' must be an int, got 'abc' \(str\)"),
        (_set("center", value="false"), r"field 'center' must be a bool, got 'false' \(str\)"),
        (_set("inputs", value=None), r"field 'inputs' must be a dict, got None \(NoneType\)"),
        (_set("method", value="nope"), r"field 'method' must be one of \[.*'ridge'.*\], got 'nope' \(str\)"),
        (_set("centre", value=True), r"field 'centre' is unknown; expected one of \[.*'center'"),
        (_set("trained_on", value="s0"), r"field 'trained_on' must be a list, got 's0' \(str\)"),
        (_set("validated_mpp", value=[1.0]), r"field 'validated_mpp' must hold 2 items, got 1"),
        (_set("hparams", "n_comps", value="3"), r"field 'hparams.n_comps' must be an int, got '3' \(str\)"),
        (
            _set("hparams", "tumor_c", value=True),
            r"field 'hparams.tumor_c' must be a number, got True \(bool\)",
        ),
        (_set("hparams", "alphas", value=[1, "a"]), r"field 'hparams.alphas\[1\]' must be a number, got 'a'"),
        (_set("hparams", "bogus", value=1), r"field 'hparams.bogus' is unknown; expected one of \['alphas'"),
        (_set("genes", 1, value="gene_000"), r"field 'genes' holds duplicated names: 'gene_000'"),
        (_set("genes", 2, value=""), r"field 'genes\[2\]' must not be empty"),
        (_set("genes", 2, value=7), r"field 'genes\[2\]' must be a string, got 7 \(int\)"),
        (_set("genes", value=[]), r"field 'genes' must not be empty"),
        (_delete("inputs", "X_test"), r"field 'inputs.X_test' is missing"),
        (_set("inputs", "X_test", "dim", value="6"), r"field 'inputs.X_test.dim' must be an int, got '6'"),
        (_set("inputs", "X_test", "dim", value=0), r"field 'inputs.X_test.dim' must be at least 1, got 0"),
    ],
)
def test_model_json_is_validated_naming_file_and_field(saved, change, match):
    _edit_config(saved, change)
    with pytest.raises(ValueError, match=r"model\.json'?:? " + match):
        Predictor.load(saved)


def test_newer_format_asks_for_an_upgrade_before_the_schema(saved):
    _edit_config(saved, lambda c: {**c, "format_version": 2, "a_new_field": 1})
    with pytest.raises(ValueError, match="written by a newer hist2st_tk.*upgrade hist2st_tk"):
        Predictor.load(saved)


@pytest.mark.parametrize("method", available_methods())
def test_every_default_hparam_passes_its_schema(method):
    """A None default says nothing of the type: such a hyper-parameter must declare its spec."""
    cls = method_class(method)
    check(cls.defaults, hparams_spec(cls.defaults, cls.hparam_specs), file="defaults", path="hparams")


def test_shipped_default_model_passes_the_schema():
    from hist2st_tk.models._default import DEFAULT_MODEL_DIR

    model = Predictor.load(DEFAULT_MODEL_DIR)
    assert model.method == "ridge" and model.center is True


# -- tensors ---------------------------------------------------------------------------------------------
def _nan_at_first(name):
    def change(tensors):
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] = float("nan")

    return change


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (_nan_at_first("coef"), r"holds NaN or infinite values in tensor 'coef' \(1 of 12 values\)"),
        (_nan_at_first("novelty.mean"), r"holds NaN or infinite values in tensor 'novelty.mean'"),
        (
            lambda t: t.update(coef=t["coef"].reshape(3, 4).contiguous()),
            r"tensor 'coef' has shape \(3, 4\), expected \(4, 3\); model.json records 4 genes and inputs "
            r"\{'X_test': 6\}",
        ),
        (
            lambda t: t.update(scaler_mean=t["scaler_mean"][:5].contiguous()),
            r"tensor 'scaler_mean' has shape \(5,\), expected \(6,\)",
        ),
        (
            lambda t: t.update({"novelty.mean": t["novelty.mean"][:5].contiguous()}),
            r"tensor 'novelty.mean' has shape \(5,\), expected \(6,\)",
        ),
        (lambda t: t.update(extra=torch.zeros(2)), r"unexpected tensors \['extra'\]"),
        (lambda t: t.pop("intercept"), r"missing tensors \['intercept'\]"),
    ],
)
def test_weights_are_checked_at_load(saved, change, match):
    _edit_weights(saved, change)
    with pytest.raises(ValueError, match=match):
        Predictor.load(saved)


def test_recorded_genes_and_inputs_must_fit_the_tensors(saved):
    _edit_config(saved, lambda c: c.update(genes=c["genes"][:3]))
    with pytest.raises(
        ValueError, match=r"tensor 'coef' has shape \(4, 3\), expected \(3, 3\); model.json records 3 genes"
    ):
        Predictor.load(saved)
    _edit_config(saved, lambda c: c.update(genes=[*c["genes"], "gene_004"]))
    _edit_config(saved, _set("inputs", "X_test", "dim", value=7))
    with pytest.raises(ValueError, match=r"tensor 'scaler_mean' has shape \(6,\), expected \(7,\)"):
        Predictor.load(saved)


def test_torch_weights_must_fit_the_recorded_genes(sections, tmp_path):
    model = method_class("histospace")(use_rep="X_test", hidden=8, max_epochs=1).fit(
        sections[:2], genes=GENES
    )
    path = model.save(tmp_path / "hs")
    _edit_config(path, lambda c: c.update(genes=c["genes"][:3]))
    with pytest.raises(ValueError, match=r"tensor 'stats.y_mean' has shape \(4,\), expected \(3,\)"):
        Predictor.load(path)
    _edit_config(path, lambda c: c.update(genes=GENES))
    _edit_weights(path, lambda t: t.update({"module.head.4.weight": t["module.head.4.weight"].reshape(8, 4)}))
    with pytest.raises(
        ValueError, match=r"tensor 'module.head.4.weight' has shape \(8, 4\), expected \(4, 8\)"
    ):
        Predictor.load(path)


def test_save_refuses_non_finite_weights(ridge, tmp_path):
    arrays = dict(ridge._arrays)
    try:
        ridge._arrays["intercept"] = np.array([0, np.inf, 0, 0], dtype=np.float32)
        with pytest.raises(ValueError, match=r"holds NaN or infinite values in tensor 'intercept'"):
            ridge.save(tmp_path / "bad")
    finally:
        ridge._arrays = arrays
    assert not (tmp_path / "bad").exists()


# -- save -> load -> predict is bit-identical for every method --------------------------------------------
def _tiny_cnn(spec, weights):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )


register_encoder(
    EncoderSpec(
        name="tiny_cnn_files",
        input_px=16,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        out_dim=4,
        licence="test",
        weights="random",
        build=_tiny_cnn,
    ),
    overwrite=True,
)

_EPOCH = {"max_epochs": 1, "batch_size": 16}
#: The smallest settings of every method; a new method must be added here.
TINY = {
    "ridge": {"use_rep": "X_test", "n_comps": 3},
    "histospace": {"use_rep": "X_test", "hidden": 8, **_EPOCH},
    "hist_multiscale": {"use_rep": ["X_test", "X_more"], "hidden": 8, **_EPOCH},
    "deeponet": {
        "use_rep": ["X_test", "X_more"],
        "n_components": 3,
        "hidden": 8,
        "basis": 4,
        "gene_dim": 4,
        **_EPOCH,
    },
    "image2gene": {"use_rep": "X_test", "hidden": 8, "dim": 4, "k": 3, **_EPOCH},
    "hespotex": {"use_rep": "X_test", "hidden": 8, "latent": 4, "heads": 2, **_EPOCH},
    "hist2st": {"use_rep": "X_test", "hidden": 8, "heads": 2, "layers": 1, **_EPOCH},
    "stnet": {"encoder": "tiny_cnn_files", "patch_um": 64.0, **_EPOCH},
}


def test_every_method_has_tiny_settings():
    assert sorted(TINY) == available_methods()


@pytest.fixture(scope="module")
def fitted(sections, tmp_path_factory):
    """``fitted(method)``: a tiny model of ``method`` fitted on two sections (once per module) and the
    directory it was saved to."""
    models = {}

    def fit(method: str):
        if method not in models:
            model = method_class(method)(**TINY[method]).fit(sections[:2], genes=GENES)
            models[method] = (model, model.save(tmp_path_factory.mktemp("models") / method))
        return models[method]

    return fit


@pytest.mark.parametrize("method", sorted(TINY))
def test_save_load_predict_is_bit_identical(sections, fitted, method):
    model, path = fitted(method)
    expression, annotations = model.predict_all(sections[2])
    expression_again, annotations_again = Predictor.load(path).predict_all(sections[2])
    assert np.array_equal(expression.to_numpy(), expression_again.to_numpy())
    pd.testing.assert_frame_equal(annotations_again, annotations, check_exact=True)
    assert list(expression_again.columns) == GENES


@pytest.mark.parametrize("method", sorted(TINY))
def test_every_method_checks_its_tensors_against_genes_and_inputs(fitted, tmp_path, method):
    _, saved = fitted(method)
    path = tmp_path / method
    shutil.copytree(saved, path)
    _edit_config(path, lambda c: c.update(genes=c["genes"][:3]))
    with pytest.raises(
        ValueError, match=rf"do not fit a '{method}' model: tensor '[\w.]+' has shape .*3 genes"
    ):
        Predictor.load(path)
    if method == "stnet":  # reads the image, not recorded features
        return
    _edit_config(path, lambda c: c.update(genes=GENES))
    _edit_config(path, _set("inputs", "X_test", "dim", value=7))
    with pytest.raises(ValueError, match=r"tensor '[\w.]+' has shape \((6|12),\), expected \((7|13),\)"):
        Predictor.load(path)


def test_image2gene_bank_must_hold_k_spots(fitted, tmp_path):
    _, saved = fitted("image2gene")
    path = shutil.copytree(saved, tmp_path / "i2g")
    _edit_config(path, _set("hparams", "k", value=1000))
    with pytest.raises(
        ValueError, match=r"the reference bank holds 72 spots, fewer than the k=1000 neighbours"
    ):
        Predictor.load(path)


def test_resolve_names_one_fitted_predictor(tmp_path):
    default = ht.models.resolve(None)
    assert default is ht.models.default_model()
    saved = default.save(tmp_path / "copy")
    assert list(ht.models.resolve(saved).genes) == list(default.genes)
    assert ht.models.resolve(default) is default
    with pytest.raises(TypeError, match=r"`model` must be a fitted predictor .* or None for the default model; got"):
        ht.models.resolve(ht.models.RidgePredictor())
    with pytest.raises(FileNotFoundError, match="No model directory at"):
        ht.models.resolve(tmp_path / "nothing")


@pytest.mark.real_data
def test_default_panel_is_the_shipped_models_panel(her2st):
    tables = [her2st(name)["table"] for name in ("B4", "C2", "C3", "C4", "C5", "C6")]
    panel = ht.models.default_panel(tables)
    assert panel == list(ht.models.default_model().genes)
    assert len(panel) == 258 and {"KRT8", "EPCAM", "ADIPOQ"} <= set(panel[250:])


def test_default_panel_needs_tables():
    with pytest.raises(ValueError, match="is empty; pass at least one training section"):
        ht.models.default_panel([])
