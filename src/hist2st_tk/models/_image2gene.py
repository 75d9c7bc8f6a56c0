"""``image2gene``: Image2Gene, image embeddings shaped by expression similarity, prediction by kNN in that space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .._logging import logger
from ._base import register_method
from ._schema import axis_length, check_shapes
from ._torch import TRAINING_DEFAULTS, TorchPredictor


@dataclass
class SpotInputs:
    """One section's input: features (spots x d) and spot positions binned on a grid (spots x 2, int)."""

    features: np.ndarray
    bins: np.ndarray

    def __len__(self) -> int:
        return len(self.features)


class _Spots:
    """Standardised features, position bins and targets, one spot per item (collated into dicts)."""

    def __init__(self, x: np.ndarray, bins: np.ndarray, y: np.ndarray):
        self.x, self.bins, self.y = x, bins, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        import torch

        inputs = {"x": torch.as_tensor(self.x[i], dtype=torch.float32), "bins": torch.as_tensor(self.bins[i])}
        return inputs, torch.as_tensor(self.y[i], dtype=torch.float32)


def similarity_loss(embedding, targets):
    """Mean squared difference between the cosine self-similarity of the (unit) embeddings and the Pearson
    correlation between the spots' expression profiles, within the batch."""
    import torch.nn.functional as F

    profiles = F.normalize(targets - targets.mean(dim=1, keepdim=True), dim=1)
    return ((embedding @ embedding.T - profiles @ profiles.T) ** 2).mean()


@register_method
class Image2GenePredictor(TorchPredictor):
    """Image2Gene: contrastive image embeddings, then k-nearest-neighbour interpolation of expression.

    An encoder of fully connected layers maps each spot's image features (``use_rep``), plus learnt
    embeddings of its binned x and y position (``coord_bin_um`` microns per bin, from the section's top-left
    spot; ``use_coords=False`` drops them), to a unit vector. The loss makes the cosine similarity of every
    pair of spots in a batch match the Pearson correlation of their expression profiles (genes standardised
    on the training spots). The training spots' embeddings and expression are the reference bank, saved
    with the model; a new spot's expression is the similarity-weighted mean over its ``k`` nearest bank spots
    (cosine similarity).

    Hyper-parameters
    ----------------
    hidden, dim, dropout
        Width of the encoder, of the embedding, and dropout.
    k
        Neighbours in the bank; at most the number of training spots.
    use_coords, coord_bin_um, n_bins
        Position embedding on or off, bin size in microns, bins per axis (positions beyond are clipped).
    """

    method = "image2gene"
    defaults: ClassVar[dict[str, Any]] = {
        **TRAINING_DEFAULTS,
        "batch_size": 128,
        "hidden": 256,
        "dim": 128,
        "dropout": 0.1,
        "k": 50,
        "use_coords": True,
        "coord_bin_um": 200.0,
        "n_bins": 128,
    }

    # -- inputs: features and binned positions ----------------------------------------------------
    def _section_inputs(self, sdata, table, table_key: str, *, recorded: dict) -> SpotInputs:
        from .._scale import get_mpp
        from .._sdata import section_image_key
        from .._section import spatial_coords

        features = self._features(table, table_key, recorded=recorded)
        if not self.hparams["use_coords"]:
            return SpotInputs(features, np.zeros((len(features), 2), dtype=np.int64))
        microns = spatial_coords(table, table_key) * get_mpp(sdata, section_image_key(sdata, table))[0]
        bins = np.floor((microns - microns.min(axis=0)) / self.hparams["coord_bin_um"]).astype(np.int64)
        return SpotInputs(features, bins)

    def _matrix(self, inputs: SpotInputs) -> np.ndarray:
        return inputs.features

    def training_data(self, features, targets, extras, indices):
        x = np.vstack([self._standardised(features[i]) for i in indices])
        y = np.vstack([self._standardised_targets(targets[i]) for i in indices])
        return _Spots(x, np.vstack([features[i].bins for i in indices]), y)

    def build_module(self, n_features: int, n_genes: int):
        from ..nn import Image2GeneNet

        return Image2GeneNet(
            n_features,
            hidden=self.hparams["hidden"],
            dim=self.hparams["dim"],
            n_bins=self.hparams["n_bins"],
            use_coords=self.hparams["use_coords"],
            dropout=self.hparams["dropout"],
        )

    def loss(self, outputs, batch):
        return similarity_loss(outputs["embedding"], batch[1])

    # -- fit: train, then fill the reference bank --------------------------------------------------
    def _fit(self, features, targets, sections, obs) -> None:
        n_bank = sum(len(t) for t in targets)
        if self.hparams["k"] > n_bank:
            msg = (
                f"`k={self.hparams['k']}` is larger than the reference bank ({n_bank} training spots); "
                "pass a smaller k or more training sections."
            )
            raise ValueError(msg)
        super()._fit(features, targets, sections, obs)
        self._bank = {
            "embedding": np.vstack([self._embed(f) for f in features]),
            "expression": np.vstack(targets).astype(np.float32),
        }
        logger.info("image2gene: reference bank of %d spots", n_bank)

    def _embed(self, inputs: SpotInputs) -> np.ndarray:
        import torch

        x = self._standardised(inputs)
        self.module.eval()
        with torch.inference_mode():
            batch = {"x": torch.as_tensor(x, dtype=torch.float32), "bins": torch.as_tensor(inputs.bins)}
            return self.module(batch)["embedding"].numpy()

    def _predict(self, features: SpotInputs) -> np.ndarray:
        import torch

        query = torch.as_tensor(self._embed(features))
        bank = torch.as_tensor(self._bank["embedding"])
        expression = torch.as_tensor(self._bank["expression"])
        out = []
        for rows in torch.split(query, 1024):  # similarities chunk by chunk: memory query chunk x bank
            similarity, neighbours = (rows @ bank.T).topk(self.hparams["k"], dim=1)
            weights = similarity.clamp(min=0) + 1e-6
            weights = weights / weights.sum(dim=1, keepdim=True)
            out.append((weights.unsqueeze(-1) * expression[neighbours]).sum(dim=1))
        return torch.cat(out).numpy()

    # -- tensors: the module, the standardisation and the bank -------------------------------------
    def _tensors(self):
        import torch

        bank = {f"bank.{k}": torch.as_tensor(v) for k, v in self._bank.items()}
        return {**super()._tensors(), **bank}

    def _load_tensors(self, tensors) -> None:
        super()._load_tensors({k: v for k, v in tensors.items() if not k.startswith("bank.")})
        bank = {k[len("bank.") :]: v for k, v in tensors.items() if k.startswith("bank.")}
        n_bank = axis_length(bank, "embedding", 0)  # training spots: the file sets it
        expected = {"embedding": (n_bank, self.hparams["dim"]), "expression": (n_bank, len(self.genes))}
        check_shapes(bank, expected, prefix="bank.")
        if n_bank < self.hparams["k"]:  # the fit refuses it; only an edited file gets here
            msg = f"the reference bank holds {n_bank} spots, fewer than the k={self.hparams['k']} neighbours"
            raise ValueError(msg)
        self._bank = {k: v.numpy() for k, v in bank.items()}
