"""Training checkpoints: written atomically (temp file + rename), the last K kept, resumable."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clippo.atomic import atomic_write

_NAME = re.compile(r"^step_(\d{8})\.pt$")


def rng_state() -> dict[str, Any]:
    """Snapshot of the Python, NumPy and torch random generators."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what ``rng_state`` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete checkpoint in ``ckpt_dir``, oldest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(ckpt_dir: str | os.PathLike, step: int, state: dict, keep: int) -> Path:
    """Writes ``state`` as ``step_XXXXXXXX.pt`` atomically; prunes all but the last ``keep``."""
    ckpt_dir = Path(ckpt_dir)
    path = atomic_write(ckpt_dir / f"step_{step:08d}.pt", lambda tmp: torch.save(state, tmp))
    for _, old in list_checkpoints(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(ckpt_dir: str | os.PathLike) -> dict | None:
    """The newest checkpoint's state, or None when there is none."""
    found = list_checkpoints(ckpt_dir)
    if not found:
        return None
    return torch.load(found[-1][1], map_location="cpu", weights_only=False)
