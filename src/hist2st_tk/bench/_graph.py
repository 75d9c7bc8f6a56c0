"""``hist2st bench graph``: time per epoch and peak memory of a graph predictor on large synthetic sections."""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._logging import logger
from ._report import write_report

#: Goal of the graph issue: a 100,000-spot section trains in under this much memory (MB).
GOAL_PEAK_MB = 4096


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def large_section(n_spots: int, *, n_features: int = 256, n_genes: int = 1000, seed: int = 0):
    """A table-only SpatialData of ``n_spots`` spots on a square grid (100 px pitch), with features
    ``obsm["X_synthetic"]`` and log expression that depend on smooth latent fields, and its 4-neighbour grid
    graph (``ht.pp.spatial_graph(method="grid", n_neighs=4)``). No image: built in seconds at any size.

    Parameters
    ----------
    n_spots
        Number of spots.
    n_features, n_genes
        Width of ``obsm["X_synthetic"]`` and number of genes in ``X``.
    seed
        Seed of the latent fields, the mixing matrices and the noise.
    """
    import anndata as ad
    from spatialdata import SpatialData

    from ..pp import spatial_graph

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n_spots)))
    cells = np.arange(n_spots)
    xy = np.column_stack([cells % side, cells // side]).astype(np.float64)
    # latent fields: a few random plane waves (smooth across neighbouring spots)
    frequencies = rng.normal(scale=2 * np.pi / 20, size=(8, 2))
    latents = np.cos(xy @ frequencies.T + rng.uniform(0, 2 * np.pi, 8)).astype(np.float32)
    features = latents @ rng.normal(size=(8, n_features)).astype(np.float32)
    features += rng.normal(scale=0.5, size=features.shape).astype(np.float32)
    expression = np.log1p(np.exp(latents @ rng.normal(scale=0.5, size=(8, n_genes)).astype(np.float32)))
    table = ad.AnnData(
        X=expression.astype(np.float32),
        obs=pd.DataFrame(
            {"sample": pd.Categorical([f"synthetic_{n_spots}"] * n_spots)}, index=[f"spot_{i}" for i in cells]
        ),
        var=pd.DataFrame(index=[f"gene_{j:04d}" for j in range(n_genes)]),
        obsm={"spatial": xy * 100.0, "X_synthetic": features},
    )
    sdata = SpatialData(tables={"table": table})
    spatial_graph(sdata, method="grid", n_neighs=4)
    return sdata


def bench_graph(
    n_spots: Sequence[int] = (12_500, 25_000, 50_000, 100_000),
    *,
    method: str = "hespotex",
    n_features: int = 256,
    n_genes: int = 1000,
    epochs: int = 1,
    batch_size: int = 256,
    out_dir: str | Path = "bench_output",
) -> pd.DataFrame:
    """Train ``method`` for ``epochs`` on one synthetic section per size (ascending), then predict it.

    Rows: spots, edges, seconds per training epoch (blocks and halos included), predict seconds, spots
    per second, and the process's peak resident memory after the size (``ru_maxrss``; sizes run in
    ascending order, so each row's peak is that of its own size or a smaller one).

    Parameters
    ----------
    n_spots
        Section sizes, run in ascending order.
    method
        A graph predictor (``"hespotex"`` or ``"hist2st"``).
    n_features, n_genes
        Features per spot and genes predicted.
    epochs
        Training epochs per size (no validation section).
    batch_size
        Spots per spatial block.
    out_dir
        Folder of the report.

    Returns
    -------
    The table of rows above; writes ``graph.json`` and ``graph.md`` into ``out_dir``.
    """
    from ..models import method_class

    model_class = method_class(method)  # an unknown method fails before any section is built
    # warm-up on a tiny section: the first fit imports torch_geometric and Lightning, not measured
    tiny = large_section(64, n_features=n_features, n_genes=n_genes)
    model_class(use_rep="X_synthetic", max_epochs=1, validation=False).fit(
        tiny, genes=tiny["table"].var_names
    )
    rows = []
    baseline = _peak_rss_mb()
    for n in sorted(n_spots):
        sdata = large_section(n, n_features=n_features, n_genes=n_genes)
        table = sdata["table"]
        model = model_class(use_rep="X_synthetic", max_epochs=epochs, validation=False, batch_size=batch_size)
        start = time.perf_counter()
        model.fit(sdata, genes=table.var_names)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        model.predict(sdata)
        predict_s = time.perf_counter() - start
        rows.append(
            {
                "method": method,
                "spots": n,
                "edges": int(table.obsp["spatial_connectivities"].nnz),
                "features": n_features,
                "genes": n_genes,
                "s_per_epoch": fit_s / epochs,
                "predict_s": predict_s,
                "train_spots_per_s": n * epochs / fit_s,
                "peak_rss_mb": _peak_rss_mb(),
                "goal_peak_mb": GOAL_PEAK_MB,
            }
        )
        logger.info("bench graph: %s on %d spots: %.1f s/epoch", method, n, fit_s / epochs)
        del sdata, table, model
    table = pd.DataFrame(rows)
    slope = (
        np.polyfit(np.log(table["spots"]), np.log(table["s_per_epoch"]), 1)[0] if len(table) > 1 else np.nan
    )
    notes = [
        f"Synthetic table-only sections on a square grid, 4-neighbour graph; {n_features} features, "
        f"{n_genes} genes; {epochs} epoch(s) without validation; blocks of {batch_size} spots plus the "
        "method's halo; no dense adjacency anywhere.",
        f"peak_rss_mb is the process peak (interpreter, torch and the data included); before the first size "
        f"(after a warm-up fit on 64 spots) it was {baseline:.0f} MB.",
        f"log-log slope of time per epoch against spots: {slope:.2f} (1.0 = linear).",
    ]
    write_report("graph", table, out_dir=out_dir, title=f"Graph predictor scale ({method})", notes=notes)
    return table
