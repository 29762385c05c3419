"""The command line in everyday use: Ctrl-C says where training stopped and how to resume; help,
version, image formats and a warm-up longer than the run are answered plainly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from helpers import tiny_cli_args
from PIL import Image

import clippo
from clippo import cli
from clippo.cli import main
from clippo.jobs import demo
from clippo.train.checkpoint import list_checkpoints
from clippo.train.config import ConfigError, load_config, resolve_config

ROOT = Path(__file__).resolve().parent.parent


# Short runs: one thread is faster than two contending for a busy machine's cores.
STEPS = {"train.total_steps": 4, "train.ckpt_every": 1, "train.threads": 1}


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # train.threads sets it for the process


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
    sets = tiny_cli_args(openclipart_small, {**STEPS, "eval.sets": "{}"})  # no evaluation
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
    sets = tiny_cli_args(openclipart_small, {**STEPS, "train.ckpt_every": 3})
    assert main(["train", "demo", "--workdir", str(tmp_path), *sets]) == 130
    assert capsys.readouterr().err.endswith(
        "\ninterrupted at step 2; resume with --resume (no checkpoint yet: it starts from step 0)\n"
    )


@pytest.fixture
def tiny_demo(openclipart_small, monkeypatch):
    """`clippo demo` on the small shards with a 4-step tiny model, instead of building the
    full openclipart set."""
    sets = tiny_cli_args(openclipart_small, STEPS)

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


def _help(capsys, *command: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


@pytest.mark.parametrize("command", [["demo"], ["train"], ["eval"], ["finetune", "glue"]])
def test_set_help_says_it_repeats(capsys, command):
    repeats = "repeat it for several: --set train.total_steps=500 --set data.batch_size=128"
    assert repeats in _help(capsys, *command)


def test_description_is_a_sentence_and_version_matches_the_package(capsys):
    sentence = (
        "Train, evaluate and convert CLIPPO models: one Vision Transformer that reads images "
        "and text rendered with GNU Unifont."
    )
    assert sentence in _help(capsys)
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"clippo {clippo.__version__}\n"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^version = "(.*)"$', pyproject, re.M).group(1) == clippo.__version__


@pytest.mark.parametrize(
    "name, image_format", [("a.jpg", "JPEG"), ("a.JPEG", "JPEG"), ("a", "PNG")]
)
def test_render_writes_the_format_the_suffix_names(tmp_path, name, image_format):
    assert main(["render", "a cat", "-o", str(tmp_path / name), "--image-size", "64"]) == 0
    with Image.open(tmp_path / name) as image:
        assert (image.format, image.size) == (image_format, (64, 64))


def test_render_refuses_an_unknown_suffix(tmp_path, capsys):
    out = tmp_path / "a.xyz"
    assert main(["render", "a cat", "-o", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"clippo render: error: {out}: unknown image suffix '.xyz'; use .png, .jpg or another "
        "format Pillow writes\n"
    )
    assert not out.exists()


WARMUP = (
    "optim.schedule.warmup_steps: a 50-step warm-up must be shorter than the 20-step run "
    "(train.total_steps); set optim.schedule.warmup_steps below 20, or "
    "optim.schedule.warmup_steps=0 and optim.schedule.warmup_percent=FRACTION (of the run, "
    "e.g. 0.05)"
)


def test_short_run_with_the_demo_warmup_says_what_to_set(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert main(["train", "demo", "--workdir", str(workdir), "--set", "train.total_steps=20"]) == 2
    assert capsys.readouterr().err == f"clippo train: error: {WARMUP}\n"
    assert not workdir.exists()
    with pytest.raises(ConfigError, match=re.escape(WARMUP)):  # before building any shard
        demo.demo_config(tmp_path / "data", ["train.total_steps=20"])
    assert not (tmp_path / "data").exists()
    fraction = ["optim.schedule.warmup_steps=0", "optim.schedule.warmup_percent=0.1"]
    load_config(resolve_config("demo"), ["train.total_steps=20", *fraction])


def test_warmup_check_leaves_finetuning_to_its_epochs():
    # finetune.epochs decides a fine-tuning run's steps, not train.total_steps.
    cfg = load_config(resolve_config("demo"), ["train.total_steps=20", "finetune.task=rte"])
    assert cfg.optim.schedule.warmup_steps == 50
