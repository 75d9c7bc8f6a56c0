"""The model files of the HistoSPACE autoencoder: writing a trained one into a directory, loading it back.

A trained autoencoder is saved as one directory (see :func:`save_autoencoder`):

- ``weights.safetensors``: the state dict, tensors only (nothing is unpickled on load);
- ``autoencoder.json``: format and version, architecture (``channels``, ``in_channels``), the tile
  size it was trained on (``input_px``), the user's metadata and the package version.

Training is in :mod:`hist2st_tk.encoders._autoencoder`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._files import WEIGHTS_FILE, package_version, read_weights, state_mismatches, write_model_dir
from .._logging import logger
from .._validate import check_count
from ..nn._autoencoder import ConvAutoencoder

__all__ = ["CONFIG_FILE", "FORMAT", "FORMAT_VERSION", "WEIGHTS_FILE", "load_autoencoder", "save_autoencoder"]

FORMAT = "hist2st_tk.autoencoder"
FORMAT_VERSION = 1
CONFIG_FILE = "autoencoder.json"


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
