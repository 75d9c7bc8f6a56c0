"""The HistoSPACE convolutional autoencoder: model, training loop, feature extractor and model files.

HistoSPACE learns image features from the sections' own tiles: a small convolutional autoencoder is
trained to reconstruct H&E tiles (MSE), then its encoder is frozen and reused, either pooled to a
feature vector per tile (:class:`AutoencoderEncoder`) or as a spatial map under a predictor head.

A trained autoencoder is saved as one directory (see :func:`save_autoencoder`):

- ``weights.safetensors``: the state dict, tensors only (nothing is unpickled on load);
- ``autoencoder.json``: format and version, architecture (``channels``, ``in_channels``), the tile
  size it was trained on (``input_px``), the user's metadata and the package version.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .._files import WEIGHTS_FILE, package_version, read_weights, state_mismatches, write_model_dir
from .._logging import logger
from .._validate import check_count

__all__ = [
    "AutoencoderEncoder",
    "ConvAutoencoder",
    "load_autoencoder",
    "save_autoencoder",
    "train_autoencoder",
]

FORMAT = "hist2st_tk.autoencoder"
FORMAT_VERSION = 1
CONFIG_FILE = "autoencoder.json"

_SHOWN = 5  # keys named in an error message


# --------------------------------------------------------------------------------------------- model


def _conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    """3x3 convolution (size preserving), batch norm, ReLU."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def _check_channels(channels: Sequence[int], in_channels: int) -> tuple[int, ...]:
    bad = isinstance(channels, str | bytes) or not isinstance(channels, Sequence) or len(channels) == 0
    if bad or any(isinstance(c, bool) or not isinstance(c, Integral) or c < 1 for c in channels):
        msg = f"`channels` must be a non-empty sequence of positive integers such as (32, 64, 128), got {channels!r}."
        raise ValueError(msg)
    check_count(in_channels, "in_channels")
    return tuple(int(c) for c in channels)


def check_tiles(x: torch.Tensor, *, in_channels: int, multiple: int) -> None:
    """Raise a clear error unless ``x`` is a float ``(N, in_channels, H, W)`` batch with H, W multiples of ``multiple``."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        msg = f"The autoencoder takes a batch of tiles shaped (N, {in_channels}, H, W), got {shape}."
        raise ValueError(msg)
    if x.shape[1] != in_channels:
        msg = (
            f"The autoencoder was built for {in_channels}-channel tiles, got {x.shape[1]} channels "
            f"(shape {tuple(x.shape)}); pass RGB tiles as (N, 3, H, W), channels first."
        )
        raise ValueError(msg)
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        msg = (
            f"Tile size {height} x {width} px is not a multiple of {multiple} (the encoder halves it "
            f"{int(math.log2(multiple))} times); crop or resize tiles to e.g. "
            f"{max(multiple, height // multiple * multiple)} x {max(multiple, width // multiple * multiple)} px."
        )
        raise ValueError(msg)
    if not x.is_floating_point():
        msg = f"The autoencoder takes float tiles in [0, 1], got dtype {x.dtype}; divide uint8 tiles by 255."
        raise TypeError(msg)


class ConvAutoencoder(nn.Module):
    """The HistoSPACE convolutional autoencoder.

    The encoder is one block per entry of ``channels`` (3x3 convolution, batch norm, ReLU, 2x2 max
    pooling), so a ``(N, 3, H, W)`` tile becomes a ``(N, channels[-1], H/8, W/8)`` map with the default
    three blocks. The decoder mirrors it (2x nearest upsampling, 3x3 convolution, batch norm, ReLU)
    and ends with a 3x3 convolution to ``in_channels`` and a sigmoid, so reconstructions lie in
    [0, 1] like the input. Train with MSE (:func:`train_autoencoder`).

    Parameters
    ----------
    channels
        Output channels of the encoder blocks; HistoSPACE uses ``(32, 64, 128)``.
    in_channels
        Channels of the input tiles (3 for RGB).

    Attributes
    ----------
    multiple
        H and W of the input must be multiples of this (``2 ** len(channels)``).
    input_px
        Edge of the square tiles it was trained on; set by :func:`train_autoencoder` and
        :func:`load_autoencoder`, ``None`` for an untrained model.
    """

    def __init__(self, *, channels: Sequence[int] = (32, 64, 128), in_channels: int = 3) -> None:
        super().__init__()
        self.channels = _check_channels(channels, in_channels)
        self.in_channels = int(in_channels)
        self.multiple = 2 ** len(self.channels)
        self.input_px: int | None = None

        widths = (self.in_channels, *self.channels)
        self.encoder = nn.Sequential(
            *(
                nn.Sequential(*_conv_block(a, b), nn.MaxPool2d(2))
                for a, b in zip(widths[:-1], widths[1:], strict=True)
            )
        )
        # Mirror: 128 -> 64 -> 32 -> 32 for the default, each after doubling the size back.
        back = (*self.channels[::-1], self.channels[0])
        self.decoder = nn.Sequential(
            *(
                nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), *_conv_block(a, b))
                for a, b in zip(back[:-1], back[1:], strict=True)
            ),
            nn.Conv2d(self.channels[0], self.in_channels, kernel_size=3, padding=1),
            nn.Sigmoid(),
        )

    def check(self, x: torch.Tensor) -> None:
        """Raise a clear error when ``x`` is not a batch this model can take."""
        check_tiles(x, in_channels=self.in_channels, multiple=self.multiple)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's feature map of tiles ``x``: ``(N, channels[-1], H / multiple, W / multiple)``."""
        self.check(x)
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of tiles ``x``, same shape, values in [0, 1]."""
        return self.decoder(self.encode(x))


class AutoencoderEncoder(nn.Module):
    """The frozen encoder of a trained :class:`ConvAutoencoder`, as a feature extractor.

    The encoder is copied, its parameters do not require gradients and it stays in eval mode (batch
    norm uses the statistics learned on the training tiles) even when a model holding this module is
    put in training mode. The autoencoder passed in is left untouched.

    Parameters
    ----------
    autoencoder
        A trained autoencoder.
    input_px
        Edge of the square tiles the autoencoder was trained on; defaults to ``autoencoder.input_px``.
    pooling
        ``"mean"``: global average pooling of the feature map, ``out_dim = channels[-1]`` (128);
        ``"mean+max"``: average and max pooling concatenated, ``out_dim = 2 * channels[-1]``.

    Attributes
    ----------
    out_dim
        Length of the feature vectors.
    map_channels
        Channels of :meth:`feature_map` (``channels[-1]``).
    input_px
        The training tile size; other sizes that are multiples of ``multiple`` work too.
    """

    def __init__(
        self,
        autoencoder: ConvAutoencoder,
        *,
        input_px: int | None = None,
        pooling: Literal["mean", "mean+max"] = "mean",
    ) -> None:
        super().__init__()
        if not isinstance(autoencoder, ConvAutoencoder):
            msg = f"`autoencoder` must be a ConvAutoencoder, got {type(autoencoder).__name__}."
            raise TypeError(msg)
        if pooling not in ("mean", "mean+max"):
            msg = f"`pooling` must be 'mean' or 'mean+max', got {pooling!r}."
            raise ValueError(msg)
        input_px = autoencoder.input_px if input_px is None else input_px
        if input_px is None:
            msg = "The autoencoder has no training tile size; pass `input_px=` (the tile edge in pixels)."
            raise ValueError(msg)
        self.input_px = check_count(input_px, "input_px")
        self.in_channels = autoencoder.in_channels
        self.multiple = autoencoder.multiple
        self.pooling = pooling
        self.map_channels = autoencoder.channels[-1]
        self.out_dim = self.map_channels * (2 if pooling == "mean+max" else 1)
        self.encoder = _frozen_copy(autoencoder.encoder)
        self.eval()

    def train(self, mode: bool = True) -> AutoencoderEncoder:  # noqa: FBT001, FBT002 - nn.Module's signature
        """Set the mode of this module, but keep the frozen encoder in eval mode."""
        super().train(mode)
        self.encoder.eval()
        return self

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's spatial map of tiles ``x``: ``(N, map_channels, H / multiple, W / multiple)``."""
        check_tiles(x, in_channels=self.in_channels, multiple=self.multiple)
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature vectors ``(N, out_dim)`` of tiles ``x`` (float RGB in [0, 1])."""
        fmap = self.feature_map(x)
        pooled = fmap.mean(dim=(-2, -1))
        if self.pooling == "mean+max":
            pooled = torch.cat([pooled, fmap.amax(dim=(-2, -1))], dim=1)
        return pooled


def _frozen_copy(module: nn.Module) -> nn.Module:
    import copy

    frozen = copy.deepcopy(module).eval()
    for parameter in frozen.parameters():
        parameter.requires_grad_(requires_grad=False)
    return frozen


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


def _tiles(batch: Any, device: torch.device) -> torch.Tensor:
    """The tile tensor of one batch: the batch itself or the first item of a tuple/list batch."""
    if isinstance(batch, tuple | list) and batch:
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        msg = f"Each batch must be a tensor (N, 3, H, W) or a tuple whose first item is one, got {type(batch).__name__}."
        raise TypeError(msg)
    return batch.to(device, non_blocking=True)


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


@contextlib.contextmanager
def _reproducible(seed: int, device: torch.device):
    """Seed torch and ask for deterministic kernels, restoring the caller's RNG and flags afterwards."""
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
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


def _run_epoch(
    model: ConvAutoencoder,
    batches: Iterable,
    *,
    optimizer: torch.optim.Optimizer | None,
    device: torch.device,
    name: str,
    epoch: int,
    lr: float,
    input_px: int | None,
) -> tuple[float, int | None]:
    """Mean MSE per tile over one pass of ``batches``; trains when ``optimizer`` is given."""
    loss_fn = nn.MSELoss()
    total, count = 0.0, 0
    grad = torch.enable_grad() if optimizer is not None else torch.no_grad()
    with grad:
        for step, batch in enumerate(batches):
            x = _tiles(batch, device)
            model.check(x)
            if count == 0:
                _check_range(x)  # once per epoch: a full check every batch would sync a GPU each step
            input_px = _check_size(x, input_px, name)
            loss = loss_fn(model(x), x)
            if not torch.isfinite(loss):
                msg = (
                    f"The reconstruction loss became {loss.item()} at epoch {epoch + 1}, batch {step + 1} of "
                    f"`{name}`; lower the learning rate (now lr={lr:g}) or check the tiles for NaN values."
                )
                raise FloatingPointError(msg)
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            total += loss.item() * len(x)
            count += len(x)
    if count == 0:
        msg = f"`{name}` yielded no tiles in epoch {epoch + 1}; pass at least one non-empty batch."
        raise ValueError(msg)
    return total / count, input_px


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
    """Train ``model`` to reconstruct tiles (Adam, MSE), in place.

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
        Seeds torch for the run (the caller's random state is restored afterwards). On CPU the same
        seed, model and batches give identical weights; on GPU cuDNN is pinned to deterministic kernels.
    device
        Where to train, e.g. ``"cpu"`` or ``"cuda"``.
    progress
        Show a progress bar over the epochs.
    val_batches
        Optional held-out tiles, in the same form as ``batches``, scored after each epoch.

    Returns
    -------
    The history: ``{"train_loss": [...], "val_loss": [...] or None, "epochs": n, "seconds": s}``,
    one mean MSE per tile and epoch.
    """
    from tqdm.auto import tqdm

    if not isinstance(model, ConvAutoencoder):
        msg = f"`model` must be a ConvAutoencoder, got {type(model).__name__}."
        raise TypeError(msg)
    epochs = check_count(epochs, "epochs")
    _check_lr(lr, weight_decay)
    _check_reiterable(batches, "batches", epochs)
    if val_batches is not None:
        _check_reiterable(val_batches, "val_batches", epochs)
    device = torch.device(device)

    history: dict[str, Any] = {"train_loss": [], "val_loss": [] if val_batches is not None else None}
    start = time.perf_counter()
    input_px = None
    with _reproducible(seed, device):
        model.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        bar = tqdm(range(epochs), desc="autoencoder", unit="epoch", disable=not progress, leave=False)
        for epoch in bar:
            model.train()
            common = {"device": device, "epoch": epoch, "lr": lr}
            loss, input_px = _run_epoch(
                model, batches, optimizer=optimizer, name="batches", input_px=input_px, **common
            )
            history["train_loss"].append(loss)
            postfix = {"loss": f"{loss:.4g}"}
            if val_batches is not None:
                model.eval()
                val_loss, _ = _run_epoch(
                    model, val_batches, optimizer=None, name="val_batches", input_px=input_px, **common
                )
                history["val_loss"].append(val_loss)
                postfix["val_loss"] = f"{val_loss:.4g}"
            bar.set_postfix(postfix)
        bar.close()
    model.eval()
    model.input_px = input_px
    history["epochs"] = epochs
    history["seconds"] = time.perf_counter() - start
    losses = history["train_loss"]
    logger.info(
        "trained autoencoder on %d px tiles: %d epochs, loss %.4g -> %.4g (%.1f s)",
        input_px, epochs, losses[0], losses[-1], history["seconds"],
    )  # fmt: skip
    return history


# --------------------------------------------------------------------------------------------- files


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and arrays in the user's metadata."""
    if hasattr(value, "tolist"):
        return value.tolist()
    msg = f"{type(value).__name__} is not JSON serialisable"
    raise TypeError(msg)


def _config(model: ConvAutoencoder, input_px: int, metadata: dict) -> str:
    if not isinstance(metadata, dict):
        msg = f"`metadata` must be a dict (e.g. {{'patch_um': 112, 'mpp': 0.5}}), got {type(metadata).__name__}."
        raise TypeError(msg)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": {"channels": list(model.channels), "in_channels": model.in_channels},
        "input_px": input_px,
        "metadata": metadata,
        "package_version": package_version(),
    }
    try:
        return json.dumps(config, indent=2, default=_plain, allow_nan=False)
    except (TypeError, ValueError) as err:
        msg = f"`metadata` must hold JSON values (str, numbers, lists, dicts; no NaN): {err}."
        raise ValueError(msg) from None


def save_autoencoder(
    model: ConvAutoencoder,
    path: str | Path,
    *,
    metadata: dict,
    input_px: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a trained autoencoder into the directory ``path``.

    The directory holds ``weights.safetensors`` (the state dict) and ``autoencoder.json``
    (``format``, ``format_version``, ``architecture`` with ``channels`` and ``in_channels``,
    ``input_px``, the user's ``metadata`` and ``package_version``). It is written under a temporary
    sibling name and renamed into place, so it is either complete or absent.

    Parameters
    ----------
    model
        The autoencoder.
    path
        The directory to create.
    metadata
        JSON-serialisable provenance, e.g. ``patch_um``, ``mpp``, the training sections, epochs and
        final loss.
    input_px
        Edge of the training tiles; defaults to ``model.input_px`` (set by :func:`train_autoencoder`).
    overwrite
        Replace an existing non-empty directory.

    Returns
    -------
    The directory.
    """

    if not isinstance(model, ConvAutoencoder):
        msg = f"`model` must be a ConvAutoencoder, got {type(model).__name__}."
        raise TypeError(msg)
    input_px = model.input_px if input_px is None else input_px
    if input_px is None:
        msg = "The model has no training tile size; train it with `train_autoencoder` or pass `input_px=`."
        raise ValueError(msg)
    text = _config(model, check_count(input_px, "input_px"), metadata)
    tensors = model.state_dict()
    path = write_model_dir(path, tensors, config_file=CONFIG_FILE, config_text=text, overwrite=overwrite)
    logger.info("saved autoencoder (%s channels, %d px tiles) to %s", list(model.channels), input_px, path)
    return path


def _read_config(path: Path) -> dict[str, Any]:
    file = path / CONFIG_FILE
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        msg = f"{str(file)!r} is not valid JSON ({err}); the autoencoder directory is corrupted."
        raise ValueError(msg) from None
    found = config.get("format") if isinstance(config, dict) else None
    if found != FORMAT:
        msg = f"{str(file)!r} is not a hist2st_tk autoencoder (format {found!r}, expected {FORMAT!r})."
        raise ValueError(msg)
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        msg = f"{str(file)!r} has an invalid format_version {version!r}; the file is corrupted."
        raise ValueError(msg)
    if version > FORMAT_VERSION:
        msg = (
            f"{str(path)!r} was written by a newer hist2st_tk (format {version}, package "
            f"{config.get('package_version')}); upgrade hist2st_tk to load it."
        )
        raise ValueError(msg)
    architecture = config.get("architecture")
    if not isinstance(architecture, dict) or not {"channels", "in_channels"} <= set(architecture):
        msg = f"{str(file)!r} lacks the architecture (channels, in_channels); the file is corrupted."
        raise ValueError(msg)
    if isinstance(config.get("input_px"), bool) or not isinstance(config.get("input_px"), int):
        msg = f"{str(file)!r} lacks an integer `input_px`; the file is corrupted."
        raise ValueError(msg)
    return config


def _check_fit(model: nn.Module, state: dict[str, torch.Tensor], file: Path) -> None:
    """Raise naming the first keys of ``state`` that do not fit ``model``."""
    problems = state_mismatches(model, state)
    if problems:
        msg = (
            f"The weights in {str(file)!r} do not fit the architecture of {CONFIG_FILE}; "
            + "; ".join(problems)
            + ". Were the two files written together by `save_autoencoder`?"
        )
        raise ValueError(msg)


def load_autoencoder(path: str | Path) -> tuple[ConvAutoencoder, dict[str, Any]]:
    """An autoencoder written by :func:`save_autoencoder`, in eval mode on the CPU.

    Only tensors are read (safetensors); missing files, foreign or newer formats, weights that do not
    fit the architecture and truncated files are refused with an error that names them.

    Returns
    -------
    ``(model, config)``: the model (``input_px`` set) and the contents of ``autoencoder.json``:
    ``input_px``, ``architecture``, the user's ``metadata``, ``package_version``, ``format_version``.
    """
    path = Path(path)
    if not path.is_dir():
        msg = f"No autoencoder directory at {str(path)!r}; give the directory written by `save_autoencoder`."
        raise FileNotFoundError(msg)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (path / name).is_file()]
    if missing:
        msg = (
            f"The autoencoder directory {str(path)!r} lacks {missing}; was it written by `save_autoencoder`?"
        )
        raise FileNotFoundError(msg)
    config = _read_config(path)
    architecture = config["architecture"]
    try:
        model = ConvAutoencoder(channels=architecture["channels"], in_channels=architecture["in_channels"])
    except (TypeError, ValueError) as err:
        msg = f"{str(path / CONFIG_FILE)!r} describes an invalid architecture ({err}); the file is corrupted."
        raise ValueError(msg) from None
    state = read_weights(path / WEIGHTS_FILE)
    _check_fit(model, state, path / WEIGHTS_FILE)
    model.load_state_dict(state, strict=True)
    model.input_px = check_count(config["input_px"], "input_px")
    return model.eval(), config
