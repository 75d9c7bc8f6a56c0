"""Files on disk written atomically: model directories (tensors in safetensors beside a JSON config) and
single files; read safely."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

WEIGHTS_FILE = "weights.safetensors"
_SHOWN = 5


def package_version() -> str:
    """The installed version of hist2st-tk, recorded in every file it writes."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hist2st-tk")
    except PackageNotFoundError:  # pragma: no cover - source tree without install
        return "unknown"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary sibling and rename it into place: the file is complete or absent."""
    staging = path.with_name(f".{path.name}.writing-{uuid.uuid4().hex[:8]}")
    try:
        staging.write_bytes(data)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def check_writable_dir(path: str | Path, *, overwrite: bool) -> Path:
    """``path`` as a Path, or raise when it is a file or a non-empty directory (without ``overwrite``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        msg = f"{str(path)!r} is a file; give the path of a directory to create."
        raise FileExistsError(msg)
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        msg = f"{str(path)!r} already exists and is not empty; pass `overwrite=True` to replace it."
        raise FileExistsError(msg)
    return path


def write_model_dir(
    path: str | Path, tensors: dict[str, torch.Tensor], *, config_file: str, config_text: str, overwrite: bool
) -> Path:
    """Write ``weights.safetensors`` and ``config_file`` into the directory ``path``, all or nothing.

    The files go to a temporary sibling directory that is renamed into place; an old ``path`` is moved
    aside first and deleted only once the new one is in place.
    """
    from safetensors.torch import save_file

    path = check_writable_dir(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file({k: t.detach().cpu().contiguous() for k, t in tensors.items()}, str(staging / WEIGHTS_FILE))
        (staging / config_file).write_text(config_text)
        _replace_dir(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def _replace_dir(staging: Path, path: Path) -> None:
    if not path.exists():
        staging.rename(path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
    old.rmdir()
    path.rename(old)
    try:
        staging.rename(path)
    except BaseException:
        old.rename(path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_weights(file: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (nothing is unpickled), or an error saying it is truncated or corrupted."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        msg = f"Cannot read {str(file)!r} ({err}); the weights file is truncated or corrupted."
        raise ValueError(msg) from None


def state_mismatches(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """The first missing, unexpected and wrongly shaped keys of ``state`` for ``model`` (empty when it fits)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    return [
        f"{label} ({len(keys)}): {keys[:_SHOWN]}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
        if keys
    ]
