"""Graph predictors: the spatial graph of a section as sparse edges, trained and applied on spatial blocks.

A graph method never builds a dense adjacency matrix. The spots of a section are split into spatial
blocks (recursive halving along the longer axis), and each block is extended by the spots within
``n_hops`` graph steps (the receptive field of the network). The loss is taken on the block's own spots
only, which therefore see exactly the neighbourhood they would see in the whole graph: predicting block
by block gives the same result as predicting on the whole section, with memory bounded by the block size.
The GCN normalisation ``D^-1/2 (A + I) D^-1/2`` is computed once on the whole graph and sliced into each
block, so that border spots of a block keep their true degrees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .._logging import logger
from ._torch import TRAINING_DEFAULTS, TorchPredictor

if TYPE_CHECKING:
    import scipy.sparse as sp

#: Standardised features are clipped to this many standard deviations of the training spots.
CLIP_SD = 5.0

#: Hyper-parameters of every graph predictor.
GRAPH_DEFAULTS: dict[str, Any] = {
    **TRAINING_DEFAULTS,
    "batch_size": 256,  # spots per block (before its halo)
    "graph_key": "spatial_connectivities",
}


@dataclass
class SectionGraph:
    """One section's input to a graph method: features, normalised sparse adjacency, spot centres."""

    features: np.ndarray  # spots x d, float32
    weights: sp.csr_matrix  # D^-1/2 (A + I) D^-1/2, spots x spots, with its diagonal
    coords: np.ndarray  # spots x 2, image pixels
    extra: dict[str, Any] = field(default_factory=dict)  # what a method reads besides (e.g. raw counts)

    def __len__(self) -> int:
        return len(self.features)


def graph_adjacency(table, table_key: str, *, graph_key: str, method: str) -> sp.csr_matrix:
    """``obsp[graph_key]`` as a symmetric binary CSR matrix without self-loops, or an error naming the fix.

    Squidpy's grid graph can be slightly asymmetric on legacy ST; message passing needs both directions.
    """
    import scipy.sparse as sp

    if graph_key not in table.obsp:
        msg = (
            f"Table {table_key!r} has no obsp[{graph_key!r}], the spatial graph this {method!r} model reads. "
            "Build it first with `ht.pp.spatial_graph(sdata, method='radius', radius_um=300)` (or "
            f"`method='grid'` / `'knn'`). obsp keys: {list(table.obsp)}."
        )
        raise KeyError(msg)
    adjacency = table.obsp[graph_key]
    if adjacency.shape != (table.n_obs, table.n_obs):
        msg = (
            f"obsp[{graph_key!r}] of table {table_key!r} is a graph of {adjacency.shape[0]} x "
            f"{adjacency.shape[1]} nodes but the table has {table.n_obs} spots; rebuild it with "
            "`ht.pp.spatial_graph(sdata, ...)` on this table."
        )
        raise ValueError(msg)
    adjacency = sp.csr_matrix(adjacency, dtype=np.float32)
    adjacency = ((adjacency + adjacency.T) != 0).astype(np.float32).tocsr()
    adjacency.setdiag(0)
    adjacency.eliminate_zeros()
    return adjacency


def gcn_weights(adjacency: sp.csr_matrix) -> sp.csr_matrix:
    """``D^-1/2 (A + I) D^-1/2`` of a binary adjacency (Kipf and Welling's normalisation), CSR float32."""
    import scipy.sparse as sp

    with_loops = adjacency + sp.identity(adjacency.shape[0], dtype=np.float32, format="csr")
    scale = sp.diags(1.0 / np.sqrt(np.asarray(with_loops.sum(axis=1)).ravel()))
    return (scale @ with_loops @ scale).astype(np.float32).tocsr()


def spatial_blocks(coords: np.ndarray, block_size: int) -> list[np.ndarray]:
    """Spot indices split into spatially compact blocks of at most ``block_size`` spots.

    Each block is halved at the median of its longer axis until it is small enough, so blocks hold
    between about ``block_size / 2`` and ``block_size`` spots and the cost is ``O(n log n)``.
    """
    pending, blocks = [np.arange(len(coords))], []
    while pending:
        indices = pending.pop()
        if len(indices) <= block_size:
            blocks.append(np.sort(indices))
            continue
        points = coords[indices]
        axis = int(np.argmax(points.max(axis=0) - points.min(axis=0)))
        order = indices[np.argsort(points[:, axis], kind="stable")]
        half = len(order) // 2
        pending += [order[half:], order[:half]]
    return blocks


def with_halo(adjacency: sp.csr_matrix, core: np.ndarray, hops: int) -> np.ndarray:
    """``core`` followed by every spot within ``hops`` graph steps of it (breadth-first, sparse rows only)."""
    seen = np.zeros(adjacency.shape[0], dtype=bool)
    seen[core] = True
    frontier, halo = core, []
    for _ in range(hops):
        neighbours = np.unique(adjacency[frontier].indices)
        frontier = neighbours[~seen[neighbours]]
        if not len(frontier):
            break
        seen[frontier] = True
        halo.append(frontier)
    return np.concatenate([core, *halo]).astype(np.int64)


class BlockBatches:
    """Mini-batches of spatial blocks with their halos, one batch per item (``batched = True`` tells the
    training loader not to collate items).

    Each item is ``(inputs, targets, *extra)``: ``inputs`` holds the block's ``x`` (core spots first), its
    ``edge_index`` and ``edge_weight`` (GCN-normalised, self-loops included) and ``n_core``; ``targets``
    are the core spots' standardised targets (or an empty tensor at prediction), ``extra`` the core spots'
    rows of each extra per-spot array of the section (e.g. raw counts).
    """

    batched = True

    def __init__(
        self,
        sections: list[tuple[np.ndarray, sp.csr_matrix, np.ndarray, np.ndarray | None, list[np.ndarray]]],
        *,
        block_size: int,
        hops: int,
    ):
        # sections: (standardised features, GCN weights, coordinates, standardised targets or None, extras)
        self.sections = sections
        self.items: list[tuple[int, np.ndarray, int]] = []
        for s, (_, weights, coords, _, _) in enumerate(sections):
            binary = weights.copy()
            binary.setdiag(0)
            binary.eliminate_zeros()
            for core in spatial_blocks(coords, block_size):
                self.items.append((s, with_halo(binary, core, hops), len(core)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        import torch

        s, nodes, n_core = self.items[i]
        features, weights, _, targets, extras = self.sections[s]
        block = weights[nodes][:, nodes].tocoo()
        inputs = {
            "x": torch.as_tensor(features[nodes], dtype=torch.float32),
            "edge_index": torch.as_tensor(np.vstack([block.row, block.col]), dtype=torch.long),
            "edge_weight": torch.as_tensor(block.data, dtype=torch.float32),
            "n_core": torch.tensor(n_core),
        }
        y = targets[nodes[:n_core]] if targets is not None else np.zeros((n_core, 0))
        extra = [torch.as_tensor(np.asarray(e[nodes[:n_core]]), dtype=torch.float32) for e in extras]
        return inputs, torch.as_tensor(y, dtype=torch.float32), *extra

    def cores(self) -> list[tuple[int, np.ndarray]]:
        """``(section, core spot indices)`` of every item, in item order."""
        return [(s, nodes[:n_core]) for s, nodes, n_core in self.items]


class GraphPredictor(TorchPredictor):
    """A neural predictor whose module passes messages over the spatial graph ``obsp[graph_key]``.

    Subclasses set :attr:`n_hops` (the depth of message passing) and build a module whose ``forward``
    takes one block's inputs (see :class:`BlockBatches`) and returns outputs for its core spots.
    ``batch_size`` is the number of spots per block.
    """

    defaults: ClassVar[dict[str, Any]] = dict(GRAPH_DEFAULTS)
    n_hops: ClassVar[int] = 1

    def _describe_inputs(self, sdata, table, table_key: str) -> dict[str, dict]:
        inputs = self._check_inputs(table, table_key, recorded=None)
        graph_key = self.hparams["graph_key"]
        params = table.uns.get(graph_key.removesuffix("_connectivities") + "_neighbors", {}).get("params", {})
        method, radius = params.get("method"), params.get("radius_um")  # plain types for model.json
        inputs["graph"] = {
            "key": graph_key,
            "method": None if method is None else str(method),
            "radius_um": None if radius is None else float(radius),
        }
        return inputs

    def _section_inputs(self, sdata, table, table_key: str, *, recorded: dict) -> SectionGraph:
        from .._section import spatial_coords

        features = self._features(table, table_key, recorded=recorded)
        adjacency = graph_adjacency(table, table_key, graph_key=self.hparams["graph_key"], method=self.method)
        return SectionGraph(features, gcn_weights(adjacency), spatial_coords(table, table_key))

    # -- hooks of TorchPredictor ------------------------------------------------------------------
    def _matrix(self, inputs: SectionGraph) -> np.ndarray:
        return inputs.features

    def _standardised(self, inputs: SectionGraph) -> np.ndarray:
        # clipped to +-CLIP_SD: on a section unlike the training ones (another patient, one training
        # section), rare extreme values would otherwise be amplified by message passing
        return np.clip(super()._standardised(inputs), -CLIP_SD, CLIP_SD)

    def block_extras(self, inputs: SectionGraph) -> list[np.ndarray]:
        """Per-spot training arrays besides the targets (e.g. raw counts), sliced into each block's batch."""
        return []

    def training_data(self, features, targets, extras, indices):
        del extras  # per-spot extras of graph methods come from `block_extras`
        sections = [
            (
                self._standardised(features[i]),
                features[i].weights,
                features[i].coords,
                self._standardised_targets(targets[i]),
                self.block_extras(features[i]),
            )
            for i in indices
        ]
        batches = BlockBatches(sections, block_size=self.hparams["batch_size"], hops=self.n_hops)
        logger.info(
            "%s: %d blocks of up to %d spots (+ %d-hop halo) on %d sections",
            self.method,
            len(batches),
            self.hparams["batch_size"],
            self.n_hops,
            len(indices),
        )
        return batches

    def _predict(self, features: SectionGraph):
        import torch

        x = self._standardised(features)
        batches = BlockBatches(
            [(x, features.weights, features.coords, None, [])],
            block_size=self.hparams["batch_size"],
            hops=self.n_hops,
        )
        predicted = np.empty((len(features), len(self._stats["y_mean"])), dtype=np.float32)
        self.module.eval()
        with torch.inference_mode():
            for i, (_, core) in enumerate(batches.cores()):
                predicted[core] = self.module(batches[i][0])["expression"].numpy()
        return predicted * self._stats["y_std"] + self._stats["y_mean"], {}
