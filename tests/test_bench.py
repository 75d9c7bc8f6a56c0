"""Benchmark plumbing: reports on disk and the features benchmark end to end on a real section."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from hist2st_tk.__main__ import main
from hist2st_tk._markdown import markdown_table
from hist2st_tk.bench._report import write_report


def test_markdown_table_and_report(tmp_path):
    table = pd.DataFrame({"method": ["ridge", "stnet"], "pearson": [0.17712, 0.2]})
    assert markdown_table(table).splitlines() == [
        "| method | pearson |",
        "| --- | --- |",
        "| ridge | 0.177 |",
        "| stnet | 0.2 |",
    ]
    path = write_report("x", table, out_dir=tmp_path / "out", title="T", notes=["protocol: her2st6-loso"])
    assert path.read_text().startswith("# T\n\n| method")
    payload = json.loads((tmp_path / "out" / "x.json").read_text())
    assert payload["rows"][0] == {"method": "ridge", "pearson": 0.17712}
    assert payload["notes"] == ["protocol: her2st6-loso"] and "torch" in payload["machine"]


@pytest.mark.real_data
def test_bench_features_writes_its_table(data_root, tmp_path, capsys):
    out = tmp_path / "bench"
    status = main(
        [
            "bench",
            "features",
            "--section",
            "C6",
            "--workers",
            "0",
            "--data-dir",
            str(data_root / "her2st"),
            "--out",
            str(out),
        ]
    )
    assert status == 0
    rows = json.loads((out / "features.json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["patches"] == 178
    assert rows[0]["stream_patches_per_s"] > 0 and rows[0]["bare_forward_patches_per_s"] > 0
    assert "ratio_stream_to_bare" in (out / "features.md").read_text()
    assert "features.md" in capsys.readouterr().out


def test_bench_needs_a_benchmark_name(capsys):
    with pytest.raises(SystemExit):
        main(["bench"])
    assert "BENCHMARK" in capsys.readouterr().err


def test_bench_accuracy_table(tmp_path, monkeypatch):
    """The runner on stand-in sections named like HER2ST (the real run is `hist2st bench accuracy`)."""
    import numpy as np

    import hist2st_tk as ht
    from hist2st_tk.bench import _accuracy

    def fake_sections(**kwargs):
        sections = {}
        for i, name in enumerate(["B4", "C2", "C3", "C4", "C5", "C6"]):
            sd = ht.datasets.synthetic(n_spots=36, n_genes=60, seed=i, sample=name, patient=name[0])
            table = sd["table"]
            latents = table.obs[["latent_colour", "latent_texture"]].to_numpy(dtype=np.float32)
            table.obsm["X_lite0_112um"] = np.hstack(
                [latents, np.random.default_rng(i).normal(size=(36, 4))]
            ).astype(np.float32)
            sections[name] = sd
        return sections

    monkeypatch.setattr(_accuracy, "load_sections", fake_sections)
    table = _accuracy.bench_accuracy(
        ["ridge"],
        ["her2st6-loso", "her2st-cross-patient"],
        out_dir=tmp_path,
        panels={"top20mean": ("top_mean", 20)},
    )
    assert list(table["folds"]) == ["mean of 6 folds", "C->B4", "B4->C"]
    assert (table["pearson"] > 0.3).all() and table["tumor_auc"].notna().all()
    assert (tmp_path / "accuracy.md").is_file() and (tmp_path / "accuracy_her2st6-loso.png").is_file()
    with pytest.raises(ValueError, match=r"No benchmark recipe for methods \['nope'\]"):
        _accuracy.bench_accuracy(["nope"], out_dir=tmp_path)


def test_bench_recipes_and_the_default_model_recipe():
    """The bench's default recipe is the default model's; every recipe fits with ht.models.fit_options."""
    import hist2st_tk as ht
    from hist2st_tk.bench import _accuracy

    assert _accuracy.METHODS[_accuracy.DEFAULT_RECIPE] == ht.models.DEFAULT_RECIPE
    assert _accuracy.MULTISCALE_REPS + _accuracy.CONTEXT_REPS == ht.models.DEFAULT_RECIPE["use_rep"]
    for name, recipe in _accuracy.METHODS.items():
        assert _accuracy.fit_options(name) == ht.models.fit_options(recipe)
        assert not {"working_mpp", "augment_mpp"} & set(_accuracy.fit_options(name))


@pytest.mark.parametrize(
    ("recipe", "augmented"), [("ridge", False), ("ridge_multiscale_context_centred_multires", True)]
)
def test_bench_loads_sections_with_the_demo_loader(monkeypatch, recipe, augmented):
    """bench caches with the demo's loader, under names that carry the working resolution."""
    from hist2st_tk.bench import _accuracy

    calls = []
    monkeypatch.setattr(
        _accuracy, "sections_with_features", lambda names, **kwargs: calls.append((names, kwargs))
    )
    _accuracy.load_sections(cache_dir="here", sections=["B4"], recipe=recipe, augmented=augmented)
    assert calls == [
        (
            ["B4"],
            {
                "data_dir": None,
                "cache_dir": "here",
                "recipe": _accuracy.METHODS[recipe],
                "renderings": augmented,
                "name_working_mpp": True,
                "progress": False,
            },
        )
    ]
    _accuracy.load_sections(sections=["B4"])  # no recipe: the features as scanned
    assert calls[-1][1]["recipe"] == {}


def test_fit_recipe_fits_on_the_renderings_and_predicts_every_panel(monkeypatch):
    import hist2st_tk as ht
    from hist2st_tk._protocols import PANELS
    from hist2st_tk.bench import _accuracy

    recipe = {"method": "ridge", "use_rep": ["X_fft"], "working_mpp": 2.0, "augment_mpp": [2.0]}
    monkeypatch.setitem(_accuracy.METHODS, "stand_in", recipe)
    sections = {}
    for i, name in enumerate(["B4", "C2", "C3"]):
        sdata = ht.datasets.synthetic(n_spots=16, n_genes=260, seed=i, sample=name, patient=name[0])
        sdata["table"].var_names = ["ERBB2", "KRT8", "COL1A1", *sdata["table"].var_names[3:]]
        for key, section in ((name, sdata), (f"{name}@2", ht.pp.perturb(sdata, mpp=2.0))):
            ht.pp.image_features(section, encoder="fft", patch_um=56, progress=False)
            sections[key] = section
    model, panels = _accuracy.fit_recipe(sections, ["C2", "C3"], recipe="stand_in")
    assert list(panels) == list(PANELS)
    train = [sections["C2"], sections["C3"]]
    for panel, (flavor, n) in PANELS.items():
        assert list(panels[panel]) == list(ht.pp.select_genes(train, n_genes=n, flavor=flavor, key_added="x"))
    own = ht.models.default_panel([s["table"] for s in train])
    assert set(model.genes) == {*own, *panels["top250mean"], *panels["top50var"]}
    assert model.trained_on == ["C2", "C3"]
    assert model.training_mpp == [1.0, 2.0, 1.0, 2.0]  # each section and its rendering
