"""The HistoSPACE convolutional autoencoder: training.

HistoSPACE learns image features from the sections' own tiles: a small convolutional autoencoder is
trained to reconstruct H&E tiles (MSE), then its encoder is frozen and reused, either pooled to a
feature vector per tile (:class:`AutoencoderEncoder`) or as a spatial map under a predictor head.
The networks are in :mod:`hist2st_tk.nn`; they are trained by the Lightning plan the predictors share
(:mod:`hist2st_tk.nn._training`).

The model files (:func:`save_autoencoder`, :func:`load_autoencoder`) are in
:mod:`hist2st_tk.encoders._autoencoder_files`; they are re-exported here.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import time
from collections.abc import Iterable, Iterator
from numbers import Real
from typing import Any

import numpy as np
import torch
from torch import nn

from .._docs import doc_params
from .._logging import logger
from .._validate import check_count
from ..nn._autoencoder import AutoencoderEncoder, ConvAutoencoder
from ..nn._autoencoder import check_tiles as check_tiles  # re-exported: it was defined here
from ._autoencoder_files import load_autoencoder as load_autoencoder  # re-exported: it was defined here
from ._autoencoder_files import save_autoencoder as save_autoencoder  # re-exported: it was defined here

__all__ = [
    "AutoencoderEncoder",
    "ConvAutoencoder",
    "load_autoencoder",
    "save_autoencoder",
    "train_autoencoder",
]

# ------------------------------------------------------------------------------------------ training


def _check_lr(lr: float, weight_decay: float) -> None:
    if isinstance(lr, bool) or not isinstance(lr, Real) or not math.isfinite(lr) or lr <= 0:
        msg = f"`lr` must be a positive number such as 1e-3, got {lr!r}."
        raise ValueError(msg)
    bad_decay = isinstance(weight_decay, bool) or not isinstance(weight_decay, Real)
    if bad_decay or not math.isfinite(weight_decay) or weight_decay < 0:
        msg = f"`weight_decay` must be a number >= 0, got {weight_decay!r}."
        raise ValueError(msg)


def _check_reiterable(batches: Iterable, name: str, epochs: int) -> None:
    if not isinstance(batches, Iterable):
        msg = f"`{name}` must be a list or DataLoader of tile batches, got {type(batches).__name__}."
        raise TypeError(msg)
    # A generator would be exhausted after the first epoch, silently training on nothing afterwards.
    if isinstance(batches, Iterator) and epochs > 1:
        msg = (
            f"`{name}` is a one-shot iterator (e.g. a generator) but training runs {epochs} epochs; "
            "pass a list of batches or a torch DataLoader."
        )
        raise TypeError(msg)


def _tiles(batch: Any) -> torch.Tensor:
    """The tile tensor of one batch: the batch itself or the first item of a tuple/list batch."""
    if isinstance(batch, tuple | list) and batch:
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        msg = f"Each batch must be a tensor (N, 3, H, W) or a tuple whose first item is one, got {type(batch).__name__}."
        raise TypeError(msg)
    return batch


def _check_range(x: torch.Tensor) -> None:
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        msg = f"Tiles must hold values in [0, 1], got [{low:.3g}, {high:.3g}]; divide uint8 tiles by 255."
        raise ValueError(msg)


def _check_size(x: torch.Tensor, input_px: int | None, name: str) -> int:
    """The square tile edge of ``x``; every training batch must have the same one."""
    height, width = x.shape[-2:]
    if height != width or (input_px is not None and height != input_px):
        expected = f"{input_px} x {input_px}" if input_px is not None else "square"
        msg = (
            f"`{name}` holds tiles of {height} x {width} px but the autoencoder trains on tiles of one "
            f"square size ({expected} px); crop or resize all tiles to one size."
        )
        raise ValueError(msg)
    return int(height)


def _no_tiles(name: str, epoch: int) -> ValueError:
    return ValueError(f"`{name}` yielded no tiles in epoch {epoch}; pass at least one non-empty batch.")


class _TileBatches:
    """The user's batches as the training plan reads them, ``(tiles, tiles, where)`` (the targets are
    the tiles; ``where`` = (name, epoch, batch) names a batch in errors), checked as they are read.

    Validation tiles must have the training tiles' size: ``sized_like`` is the training batches.
    """

    def __init__(self, batches: Iterable, name: str, model: ConvAutoencoder, *, sized_like=None):
        self.batches, self.name, self.model, self.sized_like = batches, name, model, sized_like
        self.input_px: int | None = None
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.batches)  # a TypeError for unsized iterables: Lightning then reads to the end

    def check_not_empty(self) -> None:
        """Refuse an empty list or loader up front: Lightning would skip it without a word."""
        with contextlib.suppress(TypeError):
            if len(self) == 0:
                raise _no_tiles(self.name, 1)

    def __iter__(self):
        self.epoch += 1
        count = 0
        for step, batch in enumerate(self.batches):
            x = _tiles(batch)
            self.model.check(x)
            if count == 0:
                _check_range(x)  # once per epoch: a full check every batch would sync a GPU each step
            size = self.sized_like.input_px if self.sized_like is not None else self.input_px
            self.input_px = _check_size(x, size, self.name)
            count += len(x)
            yield x, x, (self.name, self.epoch, step + 1)
        if count == 0:
            raise _no_tiles(self.name, self.epoch)


def _reconstruction_loss(outputs: torch.Tensor, batch: tuple, *, lr: float) -> torch.Tensor:
    """Mean squared error of the reconstructed tiles; a non-finite loss stops training with a hint."""
    loss = nn.functional.mse_loss(outputs, batch[1])
    if not torch.isfinite(loss):
        name, epoch, step = batch[2]
        msg = (
            f"The reconstruction loss became {loss.item()} at epoch {epoch}, batch {step} of "
            f"`{name}`; lower the learning rate (now lr={lr:g}) or check the tiles for NaN values."
        )
        raise FloatingPointError(msg)
    return loss


@contextlib.contextmanager
def _reproducible(seed: int, device: torch.device):
    """Seed torch and ask for deterministic kernels, restoring the caller's random states (torch, numpy,
    Python: Lightning seeds all three) and flags afterwards."""
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        try:
            if device.type == "cpu":
                # Every kernel used here has a deterministic CPU version; on CUDA strict mode can raise
                # (kernels without one, CUBLAS_WORKSPACE_CONFIG unset), so only cuDNN is pinned there.
                torch.use_deterministic_algorithms(mode=True)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
            yield
        finally:
            torch.use_deterministic_algorithms(mode=deterministic, warn_only=warn_only)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
            np.random.set_state(numpy_state)
            random.setstate(python_state)


def _training_config(
    epochs: int, lr: float, weight_decay: float, seed: int, device: torch.device, *, progress: bool
):
    """The plan's settings that keep the autoencoder's training as it was: Adam (L2 weight decay),
    float32, every epoch run (validation only scored), torch seeded once and its flags set by
    :func:`_reproducible`."""
    from ..nn._training import TrainingConfig

    return TrainingConfig(
        max_epochs=epochs,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        accelerator=device.type,
        devices=[device.index] if device.index is not None else 1,
        precision="32-true",
        progress=progress,
        optimizer="adam",
        early_stopping=False,
        deterministic=None,
        reseed_batches=False,  # a shuffling DataLoader without its own generator draws from torch's RNG
    )


@doc_params
def train_autoencoder(
    model: ConvAutoencoder,
    batches: Iterable,
    *,
    epochs: int,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    val_batches: Iterable | None = None,
) -> dict[str, Any]:
    """Train ``model`` to reconstruct tiles (Adam, MSE), in place, with the predictors' training plan.

    Parameters
    ----------
    model
        The autoencoder to train; it is moved to ``device``, left there in eval mode, and its
        ``input_px`` is set to the training tile size.
    batches
        A re-iterable (list, torch ``DataLoader``) of float tensors ``(N, 3, H, W)`` in [0, 1], or of
        tuples whose first item is such a tensor. All tiles must be square and of one size.
    epochs
        Passes over ``batches``.
    lr, weight_decay
        Adam's learning rate and weight decay.
    seed
        Seeds the run (the caller's random states are restored afterwards). On CPU the same seed,
        model and batches give identical weights; on GPU cuDNN is pinned to deterministic kernels.
    device
        Where to train, e.g. ``"cpu"`` or ``"cuda"``.
    {progress}
    val_batches
        Optional held-out tiles, in the same form as ``batches``, scored after each epoch.

    Returns
    -------
    The history: ``{"train_loss": [...], "val_loss": [...] or None, "epochs": n, "seconds": s}``,
    one mean MSE per tile and epoch.
    """
    from ..nn._training import train

    if not isinstance(model, ConvAutoencoder):
        msg = f"`model` must be a ConvAutoencoder, got {type(model).__name__}."
        raise TypeError(msg)
    epochs = check_count(epochs, "epochs")
    _check_lr(lr, weight_decay)
    tiles = _TileBatches(batches, "batches", model)
    val_tiles = (
        None if val_batches is None else _TileBatches(val_batches, "val_batches", model, sized_like=tiles)
    )
    for data in (tiles, val_tiles):
        if data is not None:
            _check_reiterable(data.batches, data.name, epochs)
            data.check_not_empty()
    device = torch.device(device)
    config = _training_config(epochs, lr, weight_decay, seed, device, progress=progress)
    start = time.perf_counter()
    with _reproducible(seed, device):
        losses = train(model, functools.partial(_reconstruction_loss, lr=lr), tiles, val_tiles, config)
    model.to(device).eval()  # the plan hands the model back on the CPU
    model.input_px = tiles.input_px
    history = {
        "train_loss": losses["train_loss"],
        "val_loss": losses["val_loss"] if val_batches is not None else None,
        "epochs": epochs,
        "seconds": time.perf_counter() - start,
    }
    logger.info(
        "trained autoencoder on %d px tiles: %d epochs, loss %.4g -> %.4g (%.1f s)",
        model.input_px, epochs, history["train_loss"][0], history["train_loss"][-1], history["seconds"],
    )  # fmt: skip
    return history
