"""Files on disk written atomically: model directories (tensors in safetensors beside a JSON config),
stores and single files; read safely.

A write goes to a hidden sibling named after the writing process (``.NAME.writing-PID-TAG``) and is
renamed into place. A directory that already exists is exchanged with its replacement in one step
where the system allows it (Linux ``renameat2``), so that the path always holds the old or the new
copy, whole. :func:`recover` finishes or undoes what a killed writer left behind.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import sys
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ._logging import logger

if TYPE_CHECKING:
    import torch
    from torch import nn

WEIGHTS_FILE = "weights.safetensors"
_SHOWN = 5
# the kinds of hidden siblings a write makes: the new copy, and the old one moved aside
_STAGING = re.compile(r"^\.(?P<target>.+)\.(?P<kind>writing|old)-(?P<pid>\d+)-[0-9a-f]{8}$")


def package_version() -> str:
    """The installed version of hist2st-tk, recorded in every file it writes."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hist2st-tk")
    except PackageNotFoundError:  # pragma: no cover - source tree without install
        return "unknown"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary sibling and rename it into place: the file is complete or absent."""
    staging = staging_path(path)
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

    The files go to a staging sibling that replaces ``path`` in one step (:func:`replace_dir`);
    their permissions follow the user's umask, so that others (or dask workers) can read a shared model.
    """
    from safetensors.torch import save_file

    path = check_writable_dir(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path)
    staging = staging_path(path)
    try:
        staging.mkdir()
        weights = staging / WEIGHTS_FILE
        save_file({k: t.detach().cpu().contiguous() for k, t in tensors.items()}, str(weights))
        weights.chmod(_default_mode())  # safetensors creates its file 0600
        (staging / config_file).write_text(config_text)
        replace_dir(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def staging_path(path: Path, kind: str = "writing") -> Path:
    """A hidden sibling of ``path`` for a write in progress, named after this process so that a later
    call tells the leftover of a killed run (:func:`recover`) from a write still running."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def replace_dir(staging: Path, path: Path) -> None:
    """Put the directory ``staging`` at ``path``; an old ``path`` is replaced whole and deleted.

    Where the system can exchange two directories in one step, ``path`` never stops holding a
    complete copy. Elsewhere the old copy is moved aside first; :func:`recover` puts it back when
    the process dies between the two renames.
    """
    if not path.exists():
        os.rename(staging, path)
        return
    if _exchange(staging, path):
        shutil.rmtree(staging, ignore_errors=True)  # it now holds the old copy
        return
    old = staging_path(path, "old")
    os.rename(path, old)
    try:
        os.rename(staging, path)
    except BaseException:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # pragma: no cover - glibc older than 2.28
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # pragma: no cover - e.g. some network file systems
        return False
    raise OSError(code, os.strerror(code), str(b))


def recover(path: str | Path) -> list[Path]:
    """Clean up after writers of ``path`` that were killed: put a copy moved aside back when ``path`` is
    missing, delete their staging siblings, and warn about each. Returns the siblings deleted."""
    path = Path(path)
    removed = []
    for sibling, kind, pid in _leftovers(path):
        if _alive(pid):
            continue
        if kind == "old" and not path.exists():
            os.rename(sibling, path)
            warnings.warn(f"Restored {str(path)!r} from {sibling.name}, left by an interrupted write.", stacklevel=2)
            continue
        _remove(sibling)
        removed.append(sibling)
    if removed:
        names = ", ".join(s.name for s in removed)
        logger.warning("removed %d leftover(s) of interrupted writes of %s: %s", len(removed), path, names)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _leftovers(path: Path) -> list[tuple[Path, str, int]]:
    if not path.parent.is_dir():
        return []
    found = []
    for sibling in path.parent.iterdir():
        match = _STAGING.match(sibling.name)
        if match and match["target"] == path.name:
            found.append((sibling, match["kind"], int(match["pid"])))
    return found


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _default_mode() -> int:
    """The permissions of a new file under the user's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


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
