"""Atomic file writing: every file clippo saves (models, checkpoints, caches, metrics) goes
through ``atomic_write``, so a crash mid-write leaves the old file or none, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(
    path: str | os.PathLike, write: Callable[[str], Any], *, sync: bool = True
) -> Path:
    """Calls ``write(tmp_path)`` on a temporary file beside ``path``, then renames it onto ``path``.

    The temporary file is removed if ``write`` fails (or is interrupted). The result gets the
    mode an ordinary ``open(path, "w")`` would give (0666 less the umask), not mkstemp's 0600,
    so a model directory stays readable to the users it is shared with.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp_{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        if sync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))
