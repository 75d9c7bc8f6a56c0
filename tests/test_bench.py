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
