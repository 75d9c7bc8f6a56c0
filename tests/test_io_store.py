"""Stores on disk: written and updated crash-safe, never replacing what is not ours, cleaned after a kill."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import spatialdata

import hist2st_tk as ht
from hist2st_tk import _files


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "s.zarr"
    ht.io.write_zarr(ht.datasets.synthetic(n_spots=16, n_genes=6, seed=0, sample="s"), path)
    return path


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_write_zarr_replaces_a_store_and_leaves_nothing_beside_it(store):
    ht.io.write_zarr(ht.datasets.synthetic(n_spots=9, n_genes=6, seed=1, sample="s"), store, overwrite=True)
    assert ht.io.read_zarr(store)["table"].n_obs == 9
    assert [p.name for p in store.parent.iterdir()] == ["s.zarr"]


def test_write_zarr_refuses_to_replace_a_folder_that_is_not_a_store(tmp_path):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("chapter 1")
    with pytest.raises(ValueError, match=r"Cannot overwrite .*thesis': it is not a \.zarr store"):
        ht.io.write_zarr(ht.datasets.synthetic(n_spots=9, n_genes=4), thesis, overwrite=True)
    assert (thesis / "thesis.tex").read_text() == "chapter 1"


def test_write_zarr_refuses_to_replace_the_store_read_from_or_a_folder_holding_it(tmp_path):
    outer = tmp_path / "outer.zarr"
    ht.io.write_zarr(ht.datasets.synthetic(n_spots=9, n_genes=4), outer)
    inner = outer / "images" / "inner.zarr"  # a store inside a store-like folder: the parent must survive
    ht.io.write_zarr(ht.datasets.synthetic(n_spots=9, n_genes=4), inner)
    sdata = ht.io.read_zarr(inner)
    for target in (inner, outer):
        with pytest.raises(ValueError, match="Cannot overwrite .*: the SpatialData is read lazily from"):
            ht.io.write_zarr(sdata, target, overwrite=True)
    assert ht.io.read_zarr(inner)["table"].n_obs == 9


def test_read_zarr_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No SpatialData store at .*none\.zarr'\. Make one with `hist2st read`"):
        ht.io.read_zarr(tmp_path / "none.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match=r"plain' is not a SpatialData \.zarr store \(no zarr\.json or \.zgroup"):
        ht.io.read_zarr(tmp_path / "plain")


def test_update_zarr_writes_the_elements_and_shares_the_image_chunks(store):
    sdata = ht.io.read_zarr(store)
    image_chunk = next(p for p in (store / "images").rglob("*") if p.is_file() and p.name != "zarr.json")
    inode = image_chunk.stat().st_ino
    sdata["table"].obsm["extra"] = np.arange(32.0).reshape(16, 2)
    assert ht.io.update_zarr(sdata, ["table"]) == ["table"]
    back = spatialdata.read_zarr(store)
    np.testing.assert_array_equal(back["table"].obsm["extra"], np.arange(32.0).reshape(16, 2))
    assert image_chunk.stat().st_ino == inode  # the image was linked, not rewritten
    assert str(sdata.path) == str(store)
    assert [p.name for p in store.parent.iterdir()] == ["s.zarr"]


def test_update_zarr_refuses_what_it_cannot_write(store):
    with pytest.raises(ValueError, match="not read from a store; write it with `ht.io.write_zarr"):
        ht.io.update_zarr(ht.datasets.synthetic(n_spots=9, n_genes=4), ["table"])
    sdata = ht.io.read_zarr(store)
    before = _files_under(store)
    with pytest.raises(KeyError, match=r"No element \['nope'\] in the SpatialData; it has \["):
        ht.io.update_zarr(sdata, ["table", "nope"])
    assert _files_under(store) == before


def test_replace_dir_without_an_atomic_exchange(tmp_path, monkeypatch):
    monkeypatch.setattr(_files, "_exchange", lambda a, b: False)
    target, staging = tmp_path / "t", tmp_path / "staging"
    target.mkdir()
    (target / "old").write_text("old")
    staging.mkdir()
    (staging / "new").write_text("new")
    _files.replace_dir(staging, target)
    assert [p.name for p in tmp_path.iterdir()] == ["t"] and (target / "new").read_text() == "new"


def test_recover_puts_back_a_store_moved_aside_by_a_killed_write(store):
    moved = store.with_name(f".s.zarr.old-{_dead_pid()}-0123abcd")
    store.rename(moved)
    with pytest.warns(UserWarning, match=r"Restored .*s\.zarr' from \.s\.zarr\.old-"):
        sdata = ht.io.read_zarr(store)
    assert sdata["table"].n_obs == 16 and not moved.exists()


def test_recover_removes_staging_of_dead_writers_only(store, caplog):
    dead = store.with_name(f".s.zarr.writing-{_dead_pid()}-0123abcd")
    live = store.with_name(f".s.zarr.writing-{os.getppid()}-0123abcd")
    for leftover in (dead, live):
        (leftover / "tables").mkdir(parents=True)
    ht.io.read_zarr(store)
    assert not dead.exists() and live.exists()
    assert "removed 1 leftover(s) of interrupted writes" in caplog.text and dead.name in caplog.text


def test_a_saved_model_is_readable_under_the_users_umask(tmp_path):
    import torch

    old = os.umask(0o022)
    try:
        path = _files.write_model_dir(
            tmp_path / "m", {"w": torch.zeros(2)}, config_file="model.json", config_text="{}", overwrite=False
        )
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(0o755)
    assert {oct(f.stat().st_mode & 0o777) for f in path.iterdir()} == {oct(0o644)}


def test_save_over_a_model_leaves_one_complete_directory(tmp_path):
    import torch

    for value in (0.0, 1.0):
        _files.write_model_dir(
            tmp_path / "m", {"w": torch.full((2,), value)}, config_file="model.json", config_text="{}", overwrite=True
        )
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    assert _files.read_weights(tmp_path / "m" / _files.WEIGHTS_FILE)["w"].tolist() == [1.0, 1.0]


# -- killed at many points ------------------------------------------------------------------------------


def _update_in_child(store, stop_after: int | None, count_file) -> int:
    """Fork; the child adds obsm['new'] to the table and updates the store, dying (as kill -9 would: no
    cleanup) at its ``stop_after``-th Python call (of the main thread, whose count does not depend on
    timing). Returns the child's exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            sdata = ht.io.read_zarr(store)
            sdata["table"].obsm["new"] = np.ones((sdata["table"].n_obs, 1))
            calls = 0

            def count(frame, event, arg):
                nonlocal calls
                if event == "call":
                    calls += 1
                    if calls == stop_after:
                        os._exit(9)

            sys.setprofile(count)
            ht.io.update_zarr(sdata, ["table"])
            sys.setprofile(None)
            count_file.write_text(str(calls))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_store_killed_at_any_point_of_an_update_is_old_or_new_and_whole(store, tmp_path):
    counts = spatialdata.read_zarr(store)["table"].layers["counts"].toarray()
    count_file = tmp_path / "calls.txt"
    assert _update_in_child(store, None, count_file) == 0
    total = int(count_file.read_text())
    outcomes = set()
    for stop in np.unique(np.linspace(1, total, 16).astype(int)):
        ht.io.write_zarr(ht.datasets.synthetic(n_spots=16, n_genes=6, seed=0, sample="s"), store, overwrite=True)
        code = _update_in_child(store, int(stop), count_file)
        table = spatialdata.read_zarr(store)["table"]  # spatialdata itself opens it, whatever the point
        np.testing.assert_array_equal(table.layers["counts"].toarray(), counts)
        outcomes.add("new" if "new" in table.obsm else "old")
        ht.io.read_zarr(store)  # removes the leftovers of the killed writer
        assert [p.name for p in store.parent.iterdir() if p.name.startswith(".s.zarr")] == []
        if code == 0:
            break
    assert outcomes == {"old", "new"}


def test_write_zarr_says_what_it_writes_before_and_after(tmp_path, caplog):
    with caplog.at_level("INFO", logger="hist2st_tk"):
        ht.io.write_zarr(ht.datasets.synthetic(n_spots=9, n_genes=4), tmp_path / "s.zarr")
    messages = [r.getMessage() for r in caplog.records if "s.zarr" in r.getMessage()]
    assert messages[0].startswith("writing ") and messages[-1].startswith("wrote ")
