"""ht.tl.predict_slide (streamed, resumable) and ht.tl.predict_cohort (slides in parallel, failures isolated)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import tifffile

import hist2st_tk as ht
from hist2st_tk._sdata import image_levels
from hist2st_tk.bench._wsi import write_slide
from hist2st_tk.tl import _slide

TILE_UM = 100.0  # the synthetic sections' spot pitch: one tile per spot


@pytest.fixture(scope="module")
def model(fft_model):
    return fft_model


@pytest.fixture(scope="module")
def slides(tmp_path_factory, write_synthetic_slide):
    """Slide files: two sections of tissue, a blank glass slide, a corrupted one and a file that is no slide."""
    folder = tmp_path_factory.mktemp("slides")
    paths = {}
    for seed in (1, 2):
        paths[f"s{seed}"] = write_synthetic_slide(folder / f"s{seed}.tiff", seed)  # 1,200 px, 4 x 4 tiles
    rgb = np.asarray(image_levels(ht.io.read_wsi(paths["s2"]).images["s2_he"])[0].values).transpose(1, 2, 0)
    paths["glass"] = write_slide(folder / "glass.tiff", np.full((1200, 1200, 3), 245, np.uint8), mpp=0.5)
    paths["broken"] = write_slide(folder / "broken.tiff", rgb, mpp=0.5, compression="zlib", n_levels=2)
    with tifffile.TiffFile(paths["broken"]) as tif:
        offset, size = tif.pages[0].dataoffsets[18], tif.pages[0].databytecounts[18]  # pixels [768, 1024)^2
    with open(paths["broken"], "r+b") as handle:
        handle.seek(offset)
        handle.write(bytes(size))
    paths["text"] = folder / "notes.svs"
    paths["text"].write_text("not a slide")
    return paths


def tiled(path):
    sdata = ht.io.read_wsi(path)
    ht.pp.tile_tissue(sdata, tile_um=TILE_UM)
    return sdata


def test_streamed_prediction_equals_the_whole_table_at_once(slides, model):
    streamed, whole = tiled(slides["s1"]), tiled(slides["s1"])
    predicted = ht.tl.predict_slide(streamed, model, batch_tiles=5)
    ht.pp.image_features(whole, encoder="fft", patch_um=TILE_UM, progress=False)
    expected = ht.tl.predict_expression(whole, model)

    table = streamed["table"]
    pd.testing.assert_frame_equal(predicted, expected, atol=1e-5)
    np.testing.assert_allclose(table.X, expected.to_numpy(), atol=1e-5)  # the panel is var, predictions are X
    assert list(table.var_names) == list(model.genes)
    np.testing.assert_allclose(table.obsm["X_fft"], whole["table"].obsm["X_fft"], rtol=1e-4, atol=1e-5)
    assert table.uns["predict_slide"]["n_batches"] == 4 and table.uns["predict_slide"]["skipped_tiles"] == []
    params = table.uns["X_fft"]["params"]
    assert params["patch_um"] == TILE_UM and params["n_padded"] == 0 and params["patches_per_s"] > 0
    assert "s1_tiles_patches_100um" in streamed.shapes


def test_streamed_context_features_are_averaged_over_all_tiles(slides):
    train = ht.datasets.synthetic(n_spots=16, n_genes=8, mpp=0.5, seed=0)
    ht.pp.image_features(train, encoder="fft", patch_um=TILE_UM, progress=False)
    ht.pp.spatial_graph(train, method="radius", radius_um=250)
    ht.pp.aggregate_neighbors(train, use_rep="X_fft")
    context_model = ht.tl.fit_predictor(train, method="ridge", genes=5, use_rep=["X_fft", "X_fft_nbr"])
    streamed, whole = tiled(slides["s1"]), tiled(slides["s1"])
    predicted = ht.tl.predict_slide(streamed, context_model, batch_tiles=5)
    ht.pp.model_features(whole, context_model, progress=False)
    assert not np.allclose(whole["table"].obsm["X_fft_nbr"], whole["table"].obsm["X_fft"])
    np.testing.assert_allclose(
        streamed["table"].obsm["X_fft_nbr"], whole["table"].obsm["X_fft_nbr"], rtol=1e-4, atol=1e-5
    )
    pd.testing.assert_frame_equal(predicted, ht.tl.predict_expression(whole, context_model), atol=1e-4)


def test_interrupted_run_resumes_from_finished_batches(slides, model, tmp_path, monkeypatch):
    checkpoint = tmp_path / "chunks"
    encode = _slide._encode_rows
    calls = []

    def fail_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return encode(*args, **kwargs)

    sdata = tiled(slides["s1"])
    monkeypatch.setattr(_slide, "_encode_rows", fail_on_third)
    with pytest.raises(KeyboardInterrupt):
        ht.tl.predict_slide(sdata, model, batch_tiles=5, checkpoint_dir=checkpoint)
    assert sdata["table"].n_vars == 0 and "X_fft" not in sdata["table"].obsm  # nothing written
    assert sorted(p.name for p in checkpoint.glob("batch_*.npz")) == ["batch_00000.npz", "batch_00001.npz"]

    monkeypatch.setattr(_slide, "_encode_rows", encode)
    predicted = ht.tl.predict_slide(sdata, model, batch_tiles=5, checkpoint_dir=checkpoint)
    assert sdata["table"].uns["predict_slide"]["n_resumed"] == 2
    again = tiled(slides["s1"])
    monkeypatch.setattr(_slide, "_encode_rows", None)  # everything must come from the checkpoint now
    pd.testing.assert_frame_equal(
        ht.tl.predict_slide(again, model, batch_tiles=5, checkpoint_dir=checkpoint), predicted
    )
    assert again["table"].uns["predict_slide"]["n_resumed"] == 4


def test_checkpoint_of_another_run_is_refused(slides, model, tmp_path):
    checkpoint = tmp_path / "chunks"
    ht.tl.predict_slide(tiled(slides["s1"]), model, batch_tiles=30, checkpoint_dir=checkpoint)
    sdata = tiled(slides["s2"])
    with pytest.raises(FileExistsError, match="holds other content"):
        ht.tl.predict_slide(sdata, model, batch_tiles=30, checkpoint_dir=checkpoint)
    assert sdata["table"].n_vars == 0


def test_corrupted_tiles_are_skipped_and_recorded(slides, model):
    sdata = tiled(slides["broken"])
    n_tiles = sdata["table"].n_obs
    ht.tl.predict_slide(sdata, model, batch_tiles=100)
    skipped = sdata["table"].uns["predict_slide"]["skipped_tiles"]
    # 200 px tiles from 100 px: those overlapping the corrupted 256 px file tile at [768, 1024)
    assert sorted(skipped) == ["tile_3_3", "tile_3_4", "tile_4_3", "tile_4_4"]
    assert sdata["table"].n_obs == n_tiles - 4 and np.isfinite(sdata["table"].X).all()


def test_predict_slide_bad_input(slides, model):
    sdata = tiled(slides["s1"])
    with pytest.raises(ValueError, match="`batch_tiles` must be at least 1"):
        ht.tl.predict_slide(sdata, model, batch_tiles=0)
    no_encoder = copy.deepcopy(model)
    no_encoder.inputs = {"X_fft": {"encoder": None, "patch_um": None, "dim": 22}}
    with pytest.raises(ValueError, match="does not record the encoder and patch size"):
        ht.tl.predict_slide(sdata, no_encoder)
    with pytest.raises(TypeError, match="must be a fitted predictor"):
        ht.tl.predict_slide(sdata, "not a model".split())
    glass = tiled(slides["glass"])
    with pytest.raises(ValueError, match="has no tiles to predict on"):
        ht.tl.predict_slide(glass, model)
    assert sdata["table"].n_vars == 0 and "predict_slide" not in sdata["table"].uns


def test_cohort_isolates_failures_resumes_and_writes_the_patients(slides, model, tmp_path):
    paths = [slides["s1"], slides["s2"], slides["glass"], slides["text"]]
    out = tmp_path / "out"
    patients = {"s1": "P1", "s2": "P1", "glass": "P2", "notes": "P3"}
    report = ht.tl.predict_cohort(paths, model, out_dir=out, patient_of=patients, tile_um=TILE_UM)

    assert list(report["status"]) == ["done", "done", "no_tissue", "failed"]
    assert "as a whole-slide image" in report.loc[3, "error"] and report.loc[3, "zarr"] is None
    assert (out / "s1.zarr").is_dir() and (out / "glass.zarr").is_dir() and not (out / "notes.zarr").exists()
    from spatialdata import read_zarr

    stored = read_zarr(out / "s1.zarr")
    assert not stored.images and stored["table"].n_obs == report.loc[0, "n_tiles"] == 16
    assert stored["table"].uns["predict_slide"]["n_tiles"] == 16
    table = pd.read_csv(out / "patients.csv", index_col=0)
    assert (
        list(table.index) == ["P1"]
        and table.loc["P1", "n_sections"] == 2
        and table.loc["P1", "n_spots"] == 32
    )
    assert pd.read_csv(out / "cohort_report.csv")["status"].tolist() == list(report["status"])

    again = ht.tl.predict_cohort(paths, model, out_dir=out, patient_of=patients, tile_um=TILE_UM)
    assert list(again["status"]) == ["already_done", "already_done", "already_done", "failed"]
    assert list(again["n_tiles"]) == [16, 16, 0, 0]
    with pytest.raises(FileExistsError, match=r"not results of this cohort: 'glass.zarr', 's2.zarr'"):
        ht.tl.predict_cohort(paths[:1], model, out_dir=out, overwrite=True)  # a subset would orphan stores
    replaced = ht.tl.predict_cohort(paths, model, out_dir=out, patient_of=patients, overwrite=True)
    assert list(replaced["status"]) == ["done", "done", "no_tissue", "failed"]


def test_cohort_on_a_dask_client(slides, model, tmp_path):
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        report = ht.tl.predict_cohort(
            [slides["s1"], slides["text"]], model, out_dir=tmp_path, client=client, tile_um=TILE_UM
        )
    assert list(report["status"]) == ["done", "failed"] and report.loc[0, "n_tiles"] == 16
    assert (tmp_path / "patients.csv").is_file()


def test_cohort_bad_input_is_refused(slides, model, tmp_path):
    with pytest.raises(ValueError, match="non-empty list of slide files"):
        ht.tl.predict_cohort([], model, out_dir=tmp_path)
    with pytest.raises(ValueError, match="Two slides are named 's1'"):
        ht.tl.predict_cohort([slides["s1"], slides["s1"]], model, out_dir=tmp_path)
    with pytest.raises(KeyError, match="`patient_of` has no patient for slide 's2'"):
        ht.tl.predict_cohort([slides["s2"]], model, out_dir=tmp_path, patient_of={"s1": "P1"})
    with pytest.raises(ValueError, match="`n_workers` must be at least 1"):
        ht.tl.predict_cohort([slides["s1"]], model, out_dir=tmp_path, n_workers=0)
    with pytest.raises(ValueError, match="`tile_um` must be a positive"):
        ht.tl.predict_cohort([slides["s1"]], model, out_dir=tmp_path, tile_um=-1)
    (tmp_path / "someone_else.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="holds entries that are not results of this cohort"):
        ht.tl.predict_cohort([slides["s1"]], model, out_dir=tmp_path)
    with pytest.raises(FileExistsError, match="is a file"):
        ht.tl.predict_cohort([slides["s1"]], model, out_dir=tmp_path / "someone_else.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["someone_else.txt"]
