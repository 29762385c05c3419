"""Saved files: a model directory and a checkpoint get an ordinary file's mode (0666 less the
umask, not the temporary file's 0600), and a failed write keeps the old file and no temp file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import RegressionTask, engine_cfg

import clippo
from clippo.atomic import atomic_write
from clippo.factory import create_model
from clippo.models import io
from clippo.train.engine import run


@pytest.fixture
def umask():
    """Sets the process umask for one test, then restores it."""
    saved = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


def _modes(directory: Path) -> dict[str, int]:
    return {
        str(p.relative_to(directory)): p.stat().st_mode & 0o777
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640)], ids=["022", "027"])
def test_save_pretrained_files_get_the_umask_mode(umask, tmp_path, mask, mode):
    umask(mask)
    clippo.save_pretrained(create_model("clippo-mu/8", image_size=32, out_dim=16), tmp_path)
    assert _modes(tmp_path) == {"config.json": mode, "model.safetensors": mode}


def test_training_checkpoint_and_model_are_0644_under_umask_022(umask, tmp_path):
    umask(0o022)
    run(RegressionTask(2), engine_cfg(), tmp_path)
    written = ["checkpoints/step_00000002.pt", "model/model.safetensors", "model/config.json"]
    modes = _modes(tmp_path)
    assert {name: modes[name] for name in [*written, "config.yaml"]} == {
        name: 0o644 for name in [*written, "config.yaml"]
    }


def _failing_save_file(tensors: dict, path: str) -> None:
    Path(path).write_bytes(b"half a model")
    raise OSError(28, "No space left on device")


def test_failed_save_keeps_the_old_model_and_leaves_no_temp_file(tmp_path, monkeypatch):
    model = create_model("clippo-mu/8", image_size=32, out_dim=16)
    clippo.save_pretrained(model, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(io, "save_file", _failing_save_file)
    with torch.no_grad():
        model.t.fill_(0.0)  # a different model, which must not half-replace the old one
    with pytest.raises(OSError, match="No space left"):
        clippo.save_pretrained(model, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_interrupted_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "step_00000100.pt"
    target.write_bytes(b"the good checkpoint")

    def interrupted(tmp: str) -> None:
        Path(tmp).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, interrupted)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    assert target.read_bytes() == b"the good checkpoint"
