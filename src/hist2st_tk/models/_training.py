"""The training plan every neural predictor shares, on PyTorch Lightning.

One CPU here, one or many GPUs elsewhere, with the same code: ``accelerator``, ``devices``, ``strategy``
and ``precision`` go straight to :class:`lightning.Trainer`. Training is seeded and deterministic on the
CPU, stops early on the validation loss, keeps the best weights, and resumes from its last checkpoint
after an interruption when given a ``checkpoint_dir``. An unreadable last checkpoint (a run killed while
writing it) is refused with an error naming it, never skipped: see :func:`train`.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

LossFn = Callable[[dict[str, torch.Tensor], tuple[torch.Tensor, ...]], torch.Tensor]


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
    extra: dict[str, Any] = field(default_factory=dict)


class _Plan:
    """Deferred import of lightning: the LightningModule class is built on first use."""

    _cls = None

    @classmethod
    def module_class(cls):
        if cls._cls is None:
            import lightning as L

            class RegressionPlan(L.LightningModule):
                def __init__(
                    self, module: nn.Module, loss_fn: LossFn, lr: float, weight_decay: float, augment
                ):
                    super().__init__()
                    self.module = module
                    self.loss_fn = loss_fn
                    self.augment = augment
                    self.lr, self.weight_decay = lr, weight_decay

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
                    return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

            cls._cls = RegressionPlan
        return cls._cls


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
    ``batched`` attribute is true yields whole batches (e.g. graph blocks): they are not collated."""
    from torch.utils.data import DataLoader, TensorDataset

    dataset = TensorDataset(*data) if isinstance(data, tuple) else data
    sampler = EpochShuffle(len(dataset), seed) if shuffle else None
    if getattr(dataset, "batched", False):
        batch_size = None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers)


class _History:
    """Collects the per-epoch losses Lightning logs, and seeds each epoch."""

    def __init__(self, seed: int):
        self.seed = seed
        self.values: dict[str, list[float]] = {"train_loss": [], "val_loss": []}

    def callback(self):
        from lightning.pytorch.callbacks import Callback

        history = self

        class Record(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                # dropout and augmentation draw from the global RNG: reseed it per batch so that a
                # resumed run continues exactly as an uninterrupted one
                torch.manual_seed((history.seed * 100_003 + trainer.current_epoch) * 100_003 + batch_idx)

            def on_train_epoch_end(self, trainer, pl_module):
                metrics = trainer.callback_metrics
                for key in ("train_loss", "val_loss"):
                    if key in metrics:
                        history.values[key].append(float(metrics[key]))

        return Record()


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
    spot) whose first item is the module's input; batches are passed whole to ``loss_fn(outputs, batch)``.
    With ``val_data``, training stops after ``patience`` epochs without improvement and the best weights
    are restored into ``module``. ``augment`` transforms the inputs of each training batch (not the
    validation ones). With ``config.checkpoint_dir``, the last epoch is checkpointed there and
    a later call with the same directory resumes from it.

    A ``last.ckpt`` there that cannot be read (truncated or corrupted, e.g. by a run killed while writing
    it) raises a ValueError naming the file and saying to delete it to restart training. It is not
    skipped with a warning: starting over would silently discard the finished epochs and give a
    model other than the one asked for. Lightning and Hugging Face Transformers likewise fail on a
    checkpoint they are asked to resume from; the choice to start over is left to the user.
    """
    with contextlib.ExitStack() as stack:
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
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    with _quiet_lightning():
        L.seed_everything(config.seed, workers=True, verbose=False)
        plan = _Plan.module_class()(module, loss_fn, config.lr, config.weight_decay, augment)
        history = _History(config.seed)
        best = ModelCheckpoint(
            dirpath=checkpoint_dir,
            filename="best",
            monitor="val_loss" if val_data is not None else None,
            mode="min",
            save_last=resumable,
            save_top_k=1,
            enable_version_counter=False,
        )
        callbacks = [history.callback(), best]
        if val_data is not None:
            callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=config.patience))
        on_gpu = config.accelerator in ("gpu", "cuda") or (
            config.accelerator == "auto" and torch.cuda.is_available()
        )
        trainer = L.Trainer(
            max_epochs=config.max_epochs,
            accelerator=config.accelerator,
            devices=config.devices,
            strategy=config.strategy,
            precision=config.precision or ("16-mixed" if on_gpu else "32-true"),
            deterministic=True,
            callbacks=callbacks,
            logger=False,
            enable_progress_bar=config.progress,
            enable_model_summary=False,
            default_root_dir=str(checkpoint_dir),
            num_sanity_val_steps=0,
        )
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
        if val_data is not None and best.best_model_path:
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
