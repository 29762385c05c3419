"""The command line in everyday use: Ctrl-C says where training stopped and how to resume."""

from __future__ import annotations

import pytest
from helpers import tiny_cli_args

from clippo import cli
from clippo.cli import main
from clippo.jobs import demo
from clippo.train.checkpoint import list_checkpoints
from clippo.train.config import load_config, resolve_config


@pytest.fixture
def ctrl_c_at_step_2(monkeypatch):
    """The progress callback raises KeyboardInterrupt once step 2 is done, as Ctrl-C would."""
    progress_bar = cli._progress_bar

    def interrupting(total: int, initial: int):
        bar, on_step = progress_bar(total, initial)

        def step(step: int, metrics: dict | None) -> None:
            on_step(step, metrics)
            if step == 2:
                raise KeyboardInterrupt

        return bar, step

    monkeypatch.setattr(cli, "_progress_bar", interrupting)


def test_ctrl_c_in_train_says_the_step_and_resume_continues(
    openclipart_small, tmp_path, capsys, monkeypatch, ctrl_c_at_step_2
):
    steps = {"train.total_steps": 4, "train.ckpt_every": 1, "eval.sets": "{}"}  # no evaluation
    sets = tiny_cli_args(openclipart_small, steps)
    assert main(["train", "demo", "--workdir", str(tmp_path), *sets]) == 130
    err = capsys.readouterr().err
    assert err.endswith("\ninterrupted at step 2; resume with --resume\n")
    assert "Traceback" not in err
    monkeypatch.undo()  # no more Ctrl-C
    assert main(["train", "demo", "--workdir", str(tmp_path), "--resume", *sets]) == 0
    assert [step for step, _ in list_checkpoints(tmp_path / "checkpoints")] == [4]


def test_ctrl_c_before_a_checkpoint_says_where_resume_starts(
    openclipart_small, tmp_path, capsys, ctrl_c_at_step_2
):
    sets = tiny_cli_args(openclipart_small, {"train.total_steps": 4, "train.ckpt_every": 3})
    assert main(["train", "demo", "--workdir", str(tmp_path), *sets]) == 130
    assert capsys.readouterr().err.endswith(
        "\ninterrupted at step 2; resume with --resume (no checkpoint yet: it starts from step 0)\n"
    )


@pytest.fixture
def tiny_demo(openclipart_small, monkeypatch):
    """`clippo demo` on the small shards with a 4-step tiny model, instead of building the
    full openclipart set."""
    sets = tiny_cli_args(openclipart_small, {"train.total_steps": 4, "train.ckpt_every": 1})

    def demo_config(data, overrides=(), progress=None):
        cfg = load_config(resolve_config("demo"), [*sets[1::2], *overrides])
        return cfg, {"train": 200, "val": 40, "skipped": 0}

    monkeypatch.setattr(demo, "demo_config", demo_config)


def test_ctrl_c_in_demo_says_run_it_again(tiny_demo, tmp_path, capsys, ctrl_c_at_step_2):
    args = ["demo", "--workdir", str(tmp_path / "run"), "--data", str(tmp_path / "data")]
    assert main(args) == 130
    err = capsys.readouterr().err
    assert err.endswith("\ninterrupted at step 2; run clippo demo again to resume\n")


def test_ctrl_c_outside_training_exits_130_without_traceback(tmp_path, capsys, monkeypatch):
    def building_shards(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "demo_config", building_shards)
    assert main(["demo", "--workdir", str(tmp_path), "--data", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert err.endswith("\nclippo demo: interrupted\n") and "Traceback" not in err
