"""Graph predictors: spatial blocks with halos (exact, sparse), hespotex life cycle, bad graphs, scale bench."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import hist2st_tk as ht
from hist2st_tk.models._graph import CLIP_SD, gcn_weights, graph_adjacency, spatial_blocks, with_halo


def _section(seed: int, sample: str, *, graph: bool = True):
    """Synthetic section with features = noisy latents, and its 4-neighbour grid graph."""
    sdata = ht.datasets.synthetic(n_spots=64, n_genes=10, seed=seed, sample=sample)
    table = sdata["table"]
    rng = np.random.default_rng(seed)
    latents = table.obs[["latent_colour", "latent_texture"]].to_numpy(dtype=np.float32)
    table.obsm["X_test"] = np.hstack([latents, rng.normal(size=(table.n_obs, 4)).astype(np.float32)])
    table.obsm["X_test"] += rng.normal(scale=0.3, size=(table.n_obs, 6)).astype(np.float32)
    table.uns["X_test"] = {"params": {"encoder": {"name": "test"}, "patch_um": 100.0}}
    if graph:
        ht.pp.spatial_graph(sdata, method="grid", n_neighs=4)
    return sdata


FAST = {"use_rep": "X_test", "max_epochs": 3, "hidden": 16, "latent": 8, "heads": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def sections():
    return [_section(i, f"s{i}") for i in range(3)]


def test_spatial_blocks_partition_and_halo():
    coords = np.random.default_rng(0).uniform(size=(1000, 2)) * [4, 1]
    blocks = spatial_blocks(coords, 64)
    assert np.array_equal(np.sort(np.concatenate(blocks)), np.arange(1000))
    assert all(32 <= len(b) <= 64 for b in blocks)
    # a path 0-1-2-...-9: the 2-hop halo of {4} is {2, 3, 5, 6}, core first
    path = sp.diags([np.ones(9), np.ones(9)], [-1, 1], format="csr")
    nodes = with_halo(path, np.array([4]), 2)
    assert nodes[0] == 4 and sorted(nodes) == [2, 3, 4, 5, 6]


def test_graph_adjacency_symmetric_and_normalised(sections):
    table = sections[0]["table"]
    table.obsp["spatial_connectivities"] = sp.triu(table.obsp["spatial_connectivities"]).tocsr()
    adjacency = graph_adjacency(table, "table", graph_key="spatial_connectivities", method="hespotex")
    assert (adjacency != adjacency.T).nnz == 0 and adjacency.diagonal().sum() == 0
    weights = gcn_weights(adjacency)
    degree = np.asarray(adjacency.sum(axis=1)).ravel() + 1
    np.testing.assert_allclose(weights.diagonal(), 1 / degree, rtol=1e-6)


def test_hespotex_learns_and_blocks_are_exact(sections, tmp_path):
    model = ht.tl.fit_predictor(
        sections[:2], method="hespotex", genes=6, **{**FAST, "max_epochs": 12}, lr=5e-3, batch_size=32
    )
    assert model.inputs["graph"]["key"] == "spatial_connectivities" and model.history["train_loss"]
    ht.tl.predict_expression(sections[2], model)
    assert ht.tl.evaluate(sections[2], key="predicted_hespotex")["pearson"] > 0.4
    # blocks of 16 spots with their 3-hop halo give what one block holding the whole section gives
    small = model.predict(sections[2])
    model.hparams["batch_size"] = 10_000
    np.testing.assert_allclose(model.predict(sections[2]).to_numpy(), small.to_numpy(), atol=1e-5)
    loaded = ht.models.load(model.save(tmp_path / "hx"))
    pd.testing.assert_frame_equal(loaded.predict(sections[2]), model.predict(sections[2]))


def test_extreme_features_are_clipped(sections):
    model = ht.tl.fit_predictor(sections[:1], method="hespotex", genes=4, **{**FAST, "max_epochs": 1})
    inputs = model._section_inputs(sections[2], sections[2]["table"], "table", recorded=model.inputs)
    inputs.features[0] = 1e6  # a spot unlike any training spot
    assert np.abs(model._standardised(inputs)).max() == CLIP_SD
    assert np.isfinite(model._predict(inputs)[0]).all()


def test_graph_method_without_graph(sections):
    bare = _section(5, "bare", graph=False)
    with pytest.raises(KeyError, match=r"no obsp\['spatial_connectivities'\].*ht.pp.spatial_graph"):
        ht.tl.fit_predictor([sections[0], bare], method="hespotex", genes=4, **FAST)
    model = ht.tl.fit_predictor(sections[:1], method="hespotex", genes=4, **{**FAST, "max_epochs": 1})
    with pytest.raises(KeyError, match="ht.pp.spatial_graph"):
        ht.tl.predict_expression(bare, model)
    assert not any(k.startswith("predicted") for k in bare["table"].obsm)


def test_graph_of_another_size():
    # AnnData itself refuses an obsp of the wrong shape on a table; graphs from elsewhere are checked here
    table = SimpleNamespace(obsp={"spatial_connectivities": sp.identity(70, format="csr")}, n_obs=64)
    with pytest.raises(ValueError, match="graph of 70 x 70 nodes but the table has 64 spots"):
        graph_adjacency(table, "table", graph_key="spatial_connectivities", method="hespotex")


def test_hespotex_heads_must_divide_hidden(sections):
    with pytest.raises(ValueError, match="must be a multiple of `heads=3`"):
        ht.tl.fit_predictor(sections[:1], method="hespotex", genes=4, **{**FAST, "heads": 3})


def test_bench_graph_small(tmp_path):
    from hist2st_tk.bench._graph import bench_graph, large_section

    sdata = large_section(300, n_features=8, n_genes=5)
    assert sdata["table"].obsp["spatial_connectivities"].nnz > 300 * 3
    table = bench_graph((200, 400), n_features=8, n_genes=5, out_dir=tmp_path, batch_size=64)
    assert list(table["spots"]) == [200, 400] and (table["s_per_epoch"] > 0).all()
    assert (tmp_path / "graph.md").is_file()
    assert len(bench_graph((150,), method="hist2st", n_features=8, n_genes=5, out_dir=tmp_path)) == 1
    with pytest.raises(ValueError, match="Unknown method 'nope'"):
        bench_graph((200,), method="nope", out_dir=tmp_path)


H2ST = {"use_rep": "X_test", "hidden": 16, "heads": 2, "layers": 1}


def test_hist2st_learns_and_saves(sections, tmp_path):
    model = ht.tl.fit_predictor(
        sections[:2], method="hist2st", genes=6, max_epochs=20, lr=3e-3, batch_size=32, **H2ST
    )
    ht.tl.predict_expression(sections[2], model)
    assert ht.tl.evaluate(sections[2], key="predicted_hist2st")["pearson"] > 0.4
    loaded = ht.models.load(model.save(tmp_path / "h2st"))
    pd.testing.assert_frame_equal(loaded.predict(sections[2]), model.predict(sections[2]))


def test_hist2st_zinb_loss_on_counts_decreases(sections):
    model = ht.tl.fit_predictor(
        sections[:2], method="hist2st", genes=6, max_epochs=6, zinb_weight=1.0, validation=False, **H2ST
    )
    losses = model.history["train_loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert np.isfinite(model.predict(sections[2]).to_numpy()).all()


def test_zinb_nll_matches_scipy():
    import torch
    from scipy import stats

    from hist2st_tk.models._hist2st import zinb_nll

    counts = torch.tensor([[0.0, 3.0, 7.0]])
    mean, theta, pi = torch.tensor([[2.0, 2.5, 6.0]]), torch.tensor([[1.5, 3.0, 0.8]]), 0.2
    logit = torch.full_like(mean, float(np.log(pi / (1 - pi))))
    nb = stats.nbinom(theta.numpy(), (theta / (theta + mean)).numpy())
    likelihood = np.where(counts.numpy() == 0, pi + (1 - pi) * nb.pmf(0), (1 - pi) * nb.pmf(counts.numpy()))
    assert float(zinb_nll(counts, mean, theta, logit)) == pytest.approx(-np.log(likelihood).mean(), rel=1e-5)


def test_hist2st_zinb_needs_counts(sections):
    for sd in sections[:2]:
        del sd["table"].layers["counts"]
    with pytest.raises(KeyError, match=r"`zinb_weight > 0` needs the raw counts in `layers\['counts'\]`"):
        ht.tl.fit_predictor(sections[:2], method="hist2st", genes=4, zinb_weight=1.0, max_epochs=1, **H2ST)
