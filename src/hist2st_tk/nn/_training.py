"""The training plan every neural network shares, on PyTorch Lightning (scvi-tools' ``train`` role).

:class:`TrainingPlan` says how a network learns (loss, optimiser, augmentation, what is logged);
:func:`train` runs it with a :class:`lightning.Trainer`. The neural predictors
(:class:`~hist2st_tk.models.TorchPredictor`) and the HistoSPACE autoencoder
(:func:`hist2st_tk.encoders._autoencoder.train_autoencoder`) both train through it. This module imports
torch and lightning: it is imported when a training starts, never at ``import hist2st_tk`` nor with
:mod:`hist2st_tk.nn`.

One CPU here, one or many GPUs elsewhere, with the same code: ``accelerator``, ``devices``, ``strategy``
and ``precision`` go straight to :class:`lightning.Trainer`. Training is seeded and deterministic on the
CPU, stops early on the validation loss, keeps the best weights, and resumes from its last checkpoint
after an interruption when given a ``checkpoint_dir``. An unreadable last checkpoint (a run killed while
writing it) is refused with an error naming it, never skipped: see :func:`train`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch import nn

LossFn = Callable[[dict[str, torch.Tensor], tuple[torch.Tensor, ...]], torch.Tensor]
_OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}


@dataclass
class TrainingConfig:
    """Settings of one training run (the hyper-parameters every neural method shares)."""

    max_epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 5
    seed: int = 0
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    precision: str | None = None  # None: "16-mixed" on GPU, 32 on CPU
    checkpoint_dir: str | Path | None = None
    progress: bool = False
    num_workers: int = 0
    optimizer: str = "adamw"  # or "adam" (L2 weight decay), see TrainingPlan
    #: With validation data: stop after ``patience`` epochs without improvement and restore the best
    #: weights. ``False``: the validation data is only scored (its loss is in the history).
    early_stopping: bool = True
    #: Lightning's ``deterministic``; ``None`` leaves torch's flags as the caller set them.
    deterministic: bool | None = True
    #: Reseed torch before every training batch (what makes a resumed run equal an uninterrupted one).
    reseed_batches: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class TrainingPlan(L.LightningModule):
    """How a network is trained: loss, optimiser, augmentation, and what is logged (the Lightning side).

    Batches are ``(inputs, targets, *extra)``: ``inputs`` (a tensor, or a dict for graph blocks) go to
    the network, and the whole batch and the network's outputs go to ``loss_fn``.

    Parameters
    ----------
    module
        The network (a class of :mod:`hist2st_tk.nn`); saved under the ``module.`` prefix of checkpoints.
    loss_fn
        ``loss_fn(outputs, batch)``: the scalar loss of one batch.
    lr, weight_decay
        Learning rate and weight decay of the optimiser.
    augment
        A transform of the inputs of each training batch (never of validation batches), or ``None``.
    optimizer
        ``"adamw"`` (decoupled weight decay) or ``"adam"`` (weight decay as an L2 penalty).

    Logs
    ----
    ``train_loss``
        The training loss, averaged over each epoch with each batch weighted by its number of targets.
    ``val_loss``
        The same on the validation data after each epoch (what early stopping and the best checkpoint
        monitor).
    """

    def __init__(
        self,
        module: nn.Module,
        loss_fn: LossFn,
        lr: float,
        weight_decay: float,
        augment=None,
        *,
        optimizer: str = "adamw",
    ):
        super().__init__()
        if optimizer not in _OPTIMIZERS:
            msg = f"`optimizer` must be one of {sorted(_OPTIMIZERS)}, got {optimizer!r}."
            raise ValueError(msg)
        self.module = module
        self.loss_fn = loss_fn
        self.augment = augment
        self.lr, self.weight_decay, self.optimizer = lr, weight_decay, optimizer

    def training_step(self, batch, batch_idx):
        if self.augment is not None:  # here, after the per-batch reseed: reproducible
            batch = (self.augment(batch[0]), *batch[1:])
        loss = self.loss_fn(self.module(batch[0]), batch)
        # batch[1] (targets) has one row per spot; batch[0] may be a dict (graph blocks)
        self.log("train_loss", loss, on_epoch=True, on_step=False, batch_size=len(batch[1]))
        return loss

    def validation_step(self, batch, batch_idx):
        loss = self.loss_fn(self.module(batch[0]), batch)
        self.log("val_loss", loss, on_epoch=True, on_step=False, batch_size=len(batch[1]))

    def configure_optimizers(self):
        return _OPTIMIZERS[self.optimizer](self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning's advice (workers, GPU not used, litlogger) is noise inside a library call."""
    loggers = [logging.getLogger(name) for name in ("lightning", "lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"lightning(\..*)?")
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


@contextlib.contextmanager
def _torch_flags_restored():
    """Lightning's ``deterministic=True`` sets torch's process-wide flags (and ``CUBLAS_WORKSPACE_CONFIG``);
    a library call must hand them back as it found them, or later code runs under other kernels."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


class EpochShuffle(torch.utils.data.Sampler):
    """A permutation drawn from ``(seed, epoch)`` alone, so a resumed run sees the batches an
    uninterrupted one would (Lightning calls ``set_epoch`` before every epoch)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())


def _loader(data, *, batch_size: int, shuffle: bool, seed: int, num_workers: int):
    """A DataLoader over a dataset, or over a tuple of tensors (one row per spot). A dataset whose
    ``batched`` attribute is true yields whole batches (e.g. graph blocks): they are not collated.
    An iterable that is not a (map-style) dataset already yields batches (e.g. the autoencoder's
    tiles): it is used as it is."""
    from torch.utils.data import DataLoader, TensorDataset

    if not isinstance(data, tuple) and not hasattr(data, "__getitem__"):
        return data
    dataset = TensorDataset(*data) if isinstance(data, tuple) else data
    sampler = EpochShuffle(len(dataset), seed) if shuffle else None
    if getattr(dataset, "batched", False):
        batch_size = None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers)


class EpochRecorder(Callback):
    """Seeds every training batch (unless ``reseed=False``) and collects the per-epoch losses the plan
    logs (``values``)."""

    def __init__(self, seed: int, *, reseed: bool = True):
        self.seed, self.reseed = seed, reseed
        self.values: dict[str, list[float]] = {"train_loss": [], "val_loss": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # dropout and augmentation draw from the global RNG: reseed it per batch so that a
        # resumed run continues exactly as an uninterrupted one
        if self.reseed:
            torch.manual_seed((self.seed * 100_003 + trainer.current_epoch) * 100_003 + batch_idx)

    def on_train_epoch_end(self, trainer, pl_module):
        metrics = trainer.callback_metrics
        for key in ("train_loss", "val_loss"):
            if key in metrics:
                self.values[key].append(float(metrics[key]))


def train(
    module: nn.Module,
    loss_fn: LossFn,
    train_data,
    val_data,
    config: TrainingConfig,
    *,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, list[float]]:
    """Fit ``module`` with Lightning; returns the per-epoch losses.

    ``train_data`` and ``val_data`` (or ``None``) are torch datasets or tuples of tensors (one row per
    spot), or iterables of ready batches, whose first item is the module's input; batches are passed
    whole to ``loss_fn(outputs, batch)``. With ``val_data`` (and ``config.early_stopping``), training
    stops after ``patience`` epochs without improvement and the best weights are restored into
    ``module``. ``augment`` transforms the inputs of each training batch (not the
    validation ones). With ``config.checkpoint_dir``, the last epoch is checkpointed there and
    a later call with the same directory resumes from it.

    A ``last.ckpt`` there that cannot be read (truncated or corrupted, e.g. by a run killed while writing
    it) raises a ValueError naming the file and saying to delete it to restart training. It is not
    skipped with a warning: starting over would silently discard the finished epochs and give a
    model other than the one asked for. Lightning and Hugging Face Transformers likewise fail on a
    checkpoint they are asked to resume from; the choice to start over is left to the user.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(_torch_flags_restored())
        checkpoint_dir = config.checkpoint_dir
        if checkpoint_dir is None:  # the best weights need a place to live during the run
            checkpoint_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="hist2st_tk_"))
            resumable = False
        else:
            resumable = True
        history = _fit(
            module,
            loss_fn,
            train_data,
            val_data,
            config,
            Path(checkpoint_dir),
            resumable=resumable,
            augment=augment,
        )
    module.cpu().eval()
    return history


def _callbacks(config: TrainingConfig, checkpoint_dir: Path, *, monitored: bool, resumable: bool):
    """The callbacks of a run: epoch records, the best (or last) checkpoint, early stopping when the
    validation loss is ``monitored``."""
    best = ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename="best",
        monitor="val_loss" if monitored else None,
        mode="min",
        save_last=resumable,
        save_top_k=1,
        enable_version_counter=False,
    )
    callbacks = [EpochRecorder(config.seed, reseed=config.reseed_batches), best]
    if monitored:
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=config.patience))
    return callbacks


def _trainer(config: TrainingConfig, callbacks: list, checkpoint_dir: Path):
    """The Lightning Trainer of a run: mixed precision on a GPU unless ``precision`` says otherwise."""
    on_gpu = config.accelerator in ("gpu", "cuda") or (
        config.accelerator == "auto" and torch.cuda.is_available()
    )
    return L.Trainer(
        max_epochs=config.max_epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        precision=config.precision or ("16-mixed" if on_gpu else "32-true"),
        deterministic=config.deterministic,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=config.progress,
        enable_model_summary=False,
        default_root_dir=str(checkpoint_dir),
        num_sanity_val_steps=0,
    )


def _fit(
    module,
    loss_fn,
    train_data,
    val_data,
    config: TrainingConfig,
    checkpoint_dir: Path,
    *,
    resumable: bool,
    augment,
):
    monitored = val_data is not None and config.early_stopping
    with _quiet_lightning():
        L.seed_everything(config.seed, workers=True, verbose=False)
        plan = TrainingPlan(
            module, loss_fn, config.lr, config.weight_decay, augment, optimizer=config.optimizer
        )
        callbacks = _callbacks(config, checkpoint_dir, monitored=monitored, resumable=resumable)
        history, best = callbacks[:2]
        trainer = _trainer(config, callbacks, checkpoint_dir)
        last = checkpoint_dir / "last.ckpt"
        if resumable and last.is_file():
            check_checkpoint(last)
        trainer.fit(
            plan,
            train_dataloaders=_loader(
                train_data,
                batch_size=config.batch_size,
                shuffle=True,
                seed=config.seed,
                num_workers=config.num_workers,
            ),
            val_dataloaders=None
            if val_data is None
            else _loader(
                val_data, batch_size=config.batch_size, shuffle=False, seed=config.seed, num_workers=0
            ),
            ckpt_path=str(last) if resumable and last.is_file() else None,
        )
        if monitored and best.best_model_path:  # the best epoch's weights, not the last one's
            state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
            plan.load_state_dict(state)
    return history.values


def check_checkpoint(file: Path) -> None:
    """Raise a ValueError naming ``file`` when it is not a complete checkpoint.

    ``torch.save`` writes a zip archive whose directory comes last and whose members carry a CRC, so a
    truncated or damaged file is found without unpickling anything.
    """
    try:
        with zipfile.ZipFile(file) as archive:
            damaged = archive.testzip()
        problem = None if damaged is None else f"its member {damaged!r} is damaged"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        problem = str(err)
    if problem is not None:
        msg = (
            f"Cannot resume training from {str(file)!r}: the checkpoint is truncated or corrupted "
            f"({problem}), e.g. written by a run that was killed. Delete it to restart training from "
            "the first epoch, or pass another `checkpoint_dir`."
        )
        raise ValueError(msg)
