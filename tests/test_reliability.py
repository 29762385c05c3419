"""Faults a hostile user or a crashing machine causes: crafted and damaged checkpoints, a
poisoned update, runs without evaluation, values that make no sense."""

import json
import pathlib

import pytest
import torch
from helpers import RegressionTask, tiny_cli_args
from helpers import engine_cfg as _cfg
from safetensors.torch import load_file

from clippo.cli import main
from clippo.train.checkpoint import (
    CheckpointError,
    first_non_finite,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
)
from clippo.train.config import ConfigError, load_config
from clippo.train.engine import NonFiniteLossError, run


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class _Payload:
    """Pickles as a call that creates a file: what a crafted checkpoint would run."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    run(RegressionTask(2), _cfg(ckpt_every=2), tmp_path)
    (_, path), = list_checkpoints(tmp_path / "checkpoints")  # fmt: skip
    state = load_checkpoint(path)  # a real checkpoint loads with weights_only
    marker = tmp_path / "pwned"
    state["model"]["evil"] = _Payload(marker)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"step_00000002.pt: refused"):
        load_latest_checkpoint(tmp_path / "checkpoints")
    with pytest.raises(CheckpointError, match="refused"):
        run(RegressionTask(4), _cfg(ckpt_every=2), tmp_path, resume=True)
    assert not marker.exists()


class PoisonedUpdateTask(RegressionTask):
    """At one step the loss stays finite but its gradient is NaN, so the update poisons the
    weights: torch.where's untaken branch still sends 0 * NaN back through sqrt(-1)."""

    def __init__(self, steps: int, poison_at: int):
        super().__init__(steps)
        self.poison_step = poison_at

    def loss(self, model, batch, device, autocast):
        out = super().loss(model, batch, device, autocast)
        if self.calls == self.poison_step:
            never = torch.sqrt(-(out.loss.detach() ** 2) - 1.0 + 0 * out.loss)
            out.loss = torch.where(torch.tensor(True), out.loss, never)
            assert torch.isfinite(out.loss)
        return out


def test_a_poisoned_update_is_never_saved_and_the_good_checkpoint_stays(tmp_path):
    cfg = _cfg(ckpt_every=1, keep_ckpts=1)
    with pytest.raises(NonFiniteLossError, match=r"non-finite by step 3; stopped without saving"):
        run(PoisonedUpdateTask(6, poison_at=3), cfg, tmp_path)
    ((step, path),) = list_checkpoints(tmp_path / "checkpoints")
    assert step == 2  # the last finite one, not pruned
    state = load_checkpoint(path)
    assert first_non_finite(state["model"], state["optimizer"]["state"]) is None
    assert not (tmp_path / "model").exists()


def test_the_message_names_the_checkpoint_that_is_good_or_none(tmp_path):
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written before it"):
        run(PoisonedUpdateTask(4, poison_at=1), _cfg(ckpt_every=1, keep_ckpts=1), tmp_path / "a")
    with pytest.raises(NonFiniteLossError, match=r"step_00000004.pt, is kept"):
        run(RegressionTask(8, poison_at=6), _cfg(ckpt_every=4), tmp_path / "b")


def test_an_exploding_learning_rate_stops_before_writing_infinite_weights(
    openclipart_small, tmp_path, capsys
):
    sets = tiny_cli_args(openclipart_small, {"optim.lr": "1e39", "train.ckpt_every": 1,
                                            "train.keep_ckpts": 1})  # fmt: skip
    assert main(["train", "demo", "--workdir", str(tmp_path), *sets]) == 2
    err = capsys.readouterr().err
    assert "non-finite by step 1" in err and "no checkpoint was written before it" in err
    assert list_checkpoints(tmp_path / "checkpoints") == []


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
    run(RegressionTask(8), _cfg(ckpt_every=4), tmp_path / "straight")
    final = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    ckpts = dict(list_checkpoints(tmp_path / "straight" / "checkpoints"))
    data = ckpts[8].read_bytes()
    ckpts[8].write_bytes(data[: len(data) // 2])  # a crash mid-copy, or a full disk
    stale = tmp_path / "straight" / "checkpoints" / ".tmp_step_00000012.pt.abc"
    stale.write_bytes(b"x" * 100)  # what a kill -9 mid-write leaves
    with pytest.warns(UserWarning, match=r"older checkpoint: .*step_00000008.pt: damaged"):
        run(RegressionTask(8), _cfg(ckpt_every=4), tmp_path / "straight", resume=True)
    resumed = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    for k in final:
        torch.testing.assert_close(resumed[k], final[k], rtol=0, atol=0, msg=k)
    assert not stale.exists()


def test_a_run_without_evaluation_exits_0_also_when_resumed_finished(
    openclipart_small, tmp_path, capsys
):
    sets = tiny_cli_args(openclipart_small, {"eval.sets": "{}"})
    assert main(["train", "demo", "--workdir", str(tmp_path), *sets]) == 0
    assert main(["train", "demo", "--workdir", str(tmp_path), "--resume", *sets]) == 0
    out = capsys.readouterr().out
    assert "model written to" in out and not (tmp_path / "metrics.json").exists()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows and all("train/loss" in r for r in rows)


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=-1e-3", "optim.lr must be >= 0, got -0.001"),
        ("optim.wd=-1", "optim.wd must be >= 0"),
        ("optim.grad_clip_norm=-1", "optim.grad_clip_norm must be >= 0"),
        ("data.shuffle_buffer=-5", "data.shuffle_buffer must be >= 0"),
        ("train.threads=-2", "train.threads must be >= 0"),
        ("optim.kwargs={betas: [0.9, 0.99]}", r"optim.kwargs: \['betas'\] are not options of"),
        ("eval.batch_size=0", "eval.batch_size must be positive"),
    ],
)
def test_values_that_make_no_sense_are_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["optim.name=adamw", override])
