"""Training checkpoints: written atomically (temp file + rename), the last K kept, resumable.

A checkpoint holds only tensors, numbers, strings and containers of them, and is read with
``torch.load(weights_only=True)``: a crafted ``step_*.pt`` cannot run code on ``--resume``.
Reading falls back from a damaged newest checkpoint to the intact one before it.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clippo.atomic import atomic_write

_NAME = re.compile(r"^step_(\d{8})\.pt$")
_TMP = ".tmp_step_"  # atomic_write's temporary files for checkpoints start with this


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, damaged or not a clippo checkpoint; names the file."""


def rng_state() -> dict[str, Any]:
    """Snapshot of the Python, NumPy and torch random generators (tensors and plain values)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what ``rng_state`` captured."""
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    # random.setstate wants the nested tuples getstate gave, whatever a loader turned them into.
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete checkpoint in ``ckpt_dir``, oldest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def remove_partial_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Deletes the temporary files a crash mid-write left behind; returns them."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    stale = [p for p in ckpt_dir.iterdir() if p.name.startswith(_TMP)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_checkpoint(ckpt_dir: str | os.PathLike, step: int, state: dict, keep: int) -> Path:
    """Writes ``state`` as ``step_XXXXXXXX.pt`` atomically; prunes all but the last ``keep``."""
    ckpt_dir = Path(ckpt_dir)
    path = atomic_write(ckpt_dir / f"step_{step:08d}.pt", lambda tmp: torch.save(state, tmp))
    for _, old in list_checkpoints(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """One checkpoint's state; ``CheckpointError`` names the file when it is damaged, or holds
    anything but tensors and plain values (such a file is refused unread: no code runs)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused, it holds objects a clippo checkpoint never does and that would "
            "run code when loaded (torch.load with weights_only=True)"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        first = str(e).strip().split(". ")[0]  # torch appends paragraphs of advice
        raise CheckpointError(f"{path}: damaged or not a checkpoint ({first})") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "step"} <= set(state):
        raise CheckpointError(f"{path}: not a clippo training checkpoint")
    return state


def load_latest_checkpoint(
    ckpt_dir: str | os.PathLike, skipped: list[str] | None = None
) -> dict | None:
    """The newest readable checkpoint's state, or None when there is none.

    A damaged newest checkpoint (a truncated file, say) is passed over for the one before it;
    the reasons go to ``skipped``. A crafted one is refused with ``CheckpointError``: falling
    back would hide an attack.
    """
    found = list_checkpoints(ckpt_dir)
    reasons = [] if skipped is None else skipped
    for _, path in reversed(found):
        try:
            return load_checkpoint(path)
        except CheckpointError as e:
            if "refused" in str(e):
                raise
            reasons.append(str(e))
    if found:
        raise CheckpointError(f"no readable checkpoint in {ckpt_dir}: " + "; ".join(reasons))
    return None


def first_non_finite(*state_dicts: dict) -> str | None:
    """The name of the first floating tensor holding NaN or inf in nested state dicts."""

    def walk(prefix: str, value: Any) -> str | None:
        if isinstance(value, torch.Tensor):
            bad = value.is_floating_point() and not bool(torch.isfinite(value).all())
            return prefix if bad else None
        if isinstance(value, dict):
            items = value.items()
        elif isinstance(value, list | tuple):
            items = enumerate(value)
        else:
            return None
        for k, v in items:
            found = walk(f"{prefix}.{k}" if prefix else str(k), v)
            if found:
                return found
        return None

    for state in state_dicts:
        found = walk("", state)
        if found:
            return found
    return None
