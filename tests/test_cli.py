from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest

import hist2st_tk as ht
from hist2st_tk.cli import main


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "hist2st_tk", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert all(command in out.stdout for command in ("demo", "read", "predict", "slide", "cohort", "bench"))


def test_unknown_section_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--sections", "Z9"])
    assert "invalid choice: 'Z9'" in capsys.readouterr().err


@pytest.mark.real_data
def test_demo_runs_the_main_job_and_writes_a_report(data_root, tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--sections", "B4", "C3", "--data-dir", str(data_root / "her2st")]
    assert main(argv) == 0
    report = (out / "report.md").read_text()
    assert "## 1. Fit on C3, predict B4" in report and "ARI" in report and "AUC" in report
    for figure in ("expression.png", "scatter.png", "gene_scores.png", "tumor_map.png", "clusters.png"):
        assert f"]({figure})" in report and (out / figure).stat().st_size > 10_000
    patients = pd.read_csv(out / "patients.csv")
    assert sorted(patients["sample"]) == ["B4", "C3"] and "ERBB2" in patients.columns
    # each section's features, and those of its 4 um/px rendering (the default recipe trains on both)
    assert (out / "sections" / "B4_lite0.zarr").is_dir()
    assert (out / "sections" / "C3_lite0_scan4.zarr").is_dir()
    assert f"Demo report: {(out / 'report.md').resolve()}" in capsys.readouterr().out


def test_demo_needs_the_test_section_and_another(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--sections", "C3", "C4"]) == 1
    assert "must hold the test section 'B4' and at least one other" in capsys.readouterr().err


@pytest.fixture
def section_stores(tmp_path):
    import hist2st_tk as ht

    paths = []
    for seed, name in enumerate(["train", "test"]):
        path = tmp_path / f"{name}.zarr"
        ht.io.write_zarr(ht.datasets.synthetic(n_spots=36, n_genes=8, seed=seed, sample=name), path)
        paths.append(str(path))
    return paths


def test_features_fit_predict_evaluate_on_stores(section_stores, tmp_path, capsys):
    from spatialdata import read_zarr

    train, test = section_stores
    model_dir = tmp_path / "model"
    assert main(["features", train, test, "--encoder", "handcrafted", "--patch-um", "55"]) == 0
    assert read_zarr(test)["table"].obsm["X_handcrafted"].shape == (36, 22)
    assert main(["fit", train, "--genes", "4", "--use-rep", "X_handcrafted", "--out", str(model_dir)]) == 0
    assert (model_dir / "model.json").is_file()
    assert main(["predict", test, "--model", str(model_dir)]) == 0
    table = read_zarr(test)["table"]
    assert table.obsm["predicted_ridge"].shape == (36, 4)
    scores = tmp_path / "scores.csv"
    assert main(["evaluate", test, "--key", "predicted_ridge", "--out", str(scores)]) == 0
    summary = pd.read_csv(scores)
    assert summary.loc[0, "section"] == "test" and summary.loc[0, "n_genes"] == 4
    assert "predicted_ridge_pearson" in read_zarr(test)["table"].var
    assert f"Model written to {model_dir}" in capsys.readouterr().out


def test_an_error_is_one_line_and_exit_status_1(tmp_path, capsys):
    missing = tmp_path / "nothing.zarr"
    assert main(["predict", str(missing), "--model", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"hist2st predict: error: FileNotFoundError: No SpatialData store at {str(missing)!r}. Make one with "
        "`hist2st read` or `ht.io.write_zarr(sdata, path)`. (--debug shows the traceback)\n"
    )


def test_debug_raises_the_error_with_its_traceback(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No SpatialData store at .*nothing\.zarr"):
        main(["predict", str(tmp_path / "nothing.zarr"), "--debug"])
    with pytest.raises(FileNotFoundError, match="No SpatialData store"):
        main(["--debug", "predict", str(tmp_path / "nothing.zarr")])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "{store}", "--out", "{tmp}/m", "--method", "nope"], "ValueError: Unknown method 'nope'"),
        (["features", "{store}", "--patch-um", "-5"], "patch"),
        (["predict", "{store}", "--model", "{tmp}/no_model"], "no_model"),
        (["evaluate", "{store}", "--key", "predicted_nothing"], "predicted_nothing"),
    ],
)
def test_runtime_errors_of_every_step_are_one_line(section_stores, tmp_path, capsys, argv, message):
    argv = [arg.format(store=section_stores[0], tmp=tmp_path) for arg in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"hist2st {argv[0]}: error: ") and message in err


def test_version_is_printed(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"hist2st {version('hist2st-tk')}\n"


def test_hyper_parameters_must_be_name_value(section_stores, tmp_path, capsys):
    assert main(["fit", section_stores[0], "--out", str(tmp_path / "m"), "--param", "max_epochs"]) == 1
    assert "ValueError: Hyper-parameters are NAME=VALUE, got 'max_epochs'" in capsys.readouterr().err


def test_hyper_parameters_are_typed():
    from hist2st_tk._cli_steps import parse_hparams

    assert parse_hparams(["max_epochs=3", "lr=1e-3", "validation=False", "accelerator=cpu"]) == {
        "max_epochs": 3,
        "lr": 1e-3,
        "validation": False,
        "accelerator": "cpu",
    }


def test_predict_computes_the_features_the_model_reads(section_stores, tmp_path):
    from spatialdata import read_zarr

    import hist2st_tk as ht

    train, test = section_stores
    sdata = read_zarr(train)
    ht.pp.image_features(sdata, encoder="handcrafted", patch_um=55, progress=False)
    model_dir = ht.tl.fit_predictor(sdata, genes=3, use_rep="X_handcrafted").save(tmp_path / "m")
    assert main(["predict", test, "--model", str(model_dir)]) == 0  # no `hist2st features` before
    table = read_zarr(test)["table"]
    assert table.obsm["X_handcrafted"].shape == (36, 22) and table.obsm["predicted_ridge"].shape == (36, 3)


def test_read_writes_a_store_for_each_format(tmp_path, capsys, write_synthetic_slide):
    from spatialdata import read_zarr

    slide = write_synthetic_slide(tmp_path / "slide.tiff", seed=1)
    out = tmp_path / "slide.zarr"
    assert main(["read", "wsi", str(slide), "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"Written {out}\n"
    assert ht.io.get_mpp(read_zarr(out))[0] == pytest.approx(0.5)
    assert main(["read", "wsi", str(slide), "--out", str(out)]) == 1
    assert "already exists; pass `overwrite=True`" in capsys.readouterr().err
    assert main(["read", "wsi", str(slide), "--out", str(out), "--overwrite", "--mpp", "0.25"]) == 0
    assert ht.io.get_mpp(read_zarr(out))[0] == pytest.approx(0.25)


@pytest.mark.real_data
def test_read_st_and_visium_from_the_shared_data(data_root, tmp_path):
    from spatialdata import read_zarr

    b4 = data_root / "her2st" / "B4"
    argv = ["read", "st", "--counts", str(b4 / "B4_counts.tsv.gz"), "--spots", str(b4 / "B4_selection.tsv")]
    argv += ["--image", str(next(b4.glob("*.jpg"))), "--sample", "B4", "--out", str(tmp_path / "B4.zarr")]
    assert main(argv) == 0
    assert read_zarr(tmp_path / "B4.zarr")["table"].obs["sample"].unique().tolist() == ["B4"]
    heart = data_root / "visium_human_heart_subset"
    assert main(["read", "visium", str(heart), "--out", str(tmp_path / "heart.zarr")]) == 0
    assert read_zarr(tmp_path / "heart.zarr")["table"].n_obs > 0


@pytest.fixture(scope="module")
def slide_and_model(tmp_path_factory, fft_model, write_synthetic_slide):
    folder = tmp_path_factory.mktemp("slides")
    for seed in (1, 2):
        (folder / "slides").mkdir(exist_ok=True)
        write_synthetic_slide(folder / "slides" / f"s{seed}.tiff", seed)
    return folder / "slides", fft_model.save(folder / "model")


def test_slide_tiles_and_predicts_a_slide_file_or_a_store(slide_and_model, tmp_path, capsys):
    from spatialdata import read_zarr

    slides, model = slide_and_model
    out = tmp_path / "s1.zarr"
    common = ["--model", str(model), "--tile-um", "100"]
    assert main(["slide", str(slides / "s1.tiff"), "--out", str(out), *common]) == 0
    result = read_zarr(out)
    assert not result.images and result["table"].obsm["predicted_ridge"].shape[1] == 5
    assert main(["read", "wsi", str(slides / "s2.tiff"), "--out", str(tmp_path / "s2.zarr")]) == 0
    assert main(["slide", str(tmp_path / "s2.zarr"), "--checkpoint-dir", str(tmp_path / "ckpt"), *common]) == 0
    updated = read_zarr(tmp_path / "s2.zarr")
    assert updated.images and updated["table"].n_obs == result["table"].n_obs
    capsys.readouterr()
    assert main(["slide", str(slides / "s1.tiff"), *common]) == 1
    assert "Give --out, the .zarr store to write the tiles and predictions" in capsys.readouterr().err


def test_cohort_predicts_every_slide_of_a_folder(slide_and_model, tmp_path, capsys):
    slides, model = slide_and_model
    out = tmp_path / "cohort"
    assert main(["cohort", str(slides), "--out", str(out), "--model", str(model), "--tile-um", "100"]) == 0
    assert re.search(r"s1\s+done\s+16\s", capsys.readouterr().out)
    assert pd.read_csv(out / "patients.csv")["patient"].tolist() == ["s1", "s2"]
    assert main(["cohort", str(tmp_path / "cohort"), "--out", str(tmp_path / "again")]) == 1
    assert "No slide file (.svs, .tif, .tiff" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "flag", "function", "parameter"),
    [
        ("features", "--patch-um", "pp.image_features", "patch_um"),
        ("features", "--workers", "pp.image_features", "num_workers"),
        ("fit", "--genes", "tl.fit_predictor", "genes"),
        ("slide", "--tile-um", "pp.tile_tissue", "tile_um"),
        ("cohort", "--batch-tiles", "tl.predict_slide", "batch_tiles"),
        ("cohort", "--workers", "tl.predict_cohort", "n_workers"),
    ],
)
def test_command_line_defaults_are_the_functions(command, flag, function, parameter, capsys):
    import inspect

    namespace, name = function.split(".")
    default = inspect.signature(getattr(getattr(ht, namespace), name)).parameters[parameter].default
    with pytest.raises(SystemExit):
        main([command, "--help"])
    shown = f"{default:g}" if isinstance(default, float) else str(default)
    help_text = " ".join(capsys.readouterr().out.split())
    assert re.search(rf"{re.escape(flag)} \S+( \[\S+ \.\.\.\])? .*?\(default: {re.escape(shown)}\)", help_text)
