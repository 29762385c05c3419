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

pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_resume_with_changed_settings_is_refused_and_leaves_the_directory_as_it_was(tmp_path):
    run(RegressionTask(8), _cfg(ckpt_every=4), tmp_path)
    for f in (tmp_path / "model").iterdir():
        f.unlink()
    ckpts = dict(list_checkpoints(tmp_path / "checkpoints"))
    ckpts[8].unlink()
    before = (tmp_path / "config.yaml").read_text()
    changed = _cfg(ckpt_every=4, log_every=1)
    changed.optim.lr = 1.0
    with pytest.raises(ValueError, match=r"changed settings \(optim.lr: 0.003 -> 1.0\)"):
        run(RegressionTask(8), changed, tmp_path, resume=True)
    assert (tmp_path / "config.yaml").read_text() == before
    # Logging settings may change; the replayed steps are not logged twice.
    run(RegressionTask(8), _cfg(ckpt_every=4, log_every=1), tmp_path, resume=True)
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 5, 6, 7, 8]


def test_skipped_samples_are_reported_by_reason_and_shard(openclipart_small, tmp_path):
    from clippo.eval.sets import EvalSets
    from clippo.factory import create_model

    out, stats = openclipart_small
    val = sorted(out.glob("val-*.tar"))
    damaged = tmp_path / "val-damaged.tar"
    data = val[0].read_bytes()
    damaged.write_bytes(data[: int(len(data) * 0.6)])
    cfg = load_config({"eval": {"sets": {"v": {"data": str(damaged),
                                               "evaluators": {"retrieval": {}}}}}})  # fmt: skip
    sets = EvalSets(cfg.eval.sets, batch_size=16)
    results = sets.run(create_model("clippo-mu/16", image_size=32, out_dim=16))
    assert results["v/skipped"] >= 1
    ((reason, shards),) = sets.skipped()["v"].items()
    assert shards == {"val-damaged.tar": results["v/skipped"]}


def test_training_reports_skips_by_reason_and_shard(openclipart_small, tmp_path, capsys):
    out, stats = openclipart_small
    bad = tmp_path / "shards"
    bad.mkdir()
    for f in sorted(out.glob("train-*.tar")):
        (bad / f.name).write_bytes(f.read_bytes())
    first = sorted(bad.glob("*.tar"))[0]
    data = first.read_bytes()
    first.write_bytes(data[: int(len(data) * 0.6)])
    extra = {"data.train": f"{bad}/train-*.tar", "eval.sets": "{}", "train.total_steps": 30}
    sets = tiny_cli_args(openclipart_small, extra)
    assert main(["train", "demo", "--workdir", str(tmp_path / "w"), *sets]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "w" / "skipped.json").read_text())
    (reason,) = report
    assert set(report[reason]) == {first.name}
    assert (
        f"training: skipped {report[reason][first.name]} samples, {reason} ({first.name}" in printed
    )


def test_bad_files_get_one_line_naming_them(tmp_path, capsys):
    from clippo.convert import from_big_vision
    from clippo.factory import create_model
    from clippo.models import from_pretrained, save_pretrained

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("train:\n  total_steps: [1\n")
    with pytest.raises(ConfigError, match=rf"{bad_yaml}: not valid YAML"):
        load_config(bad_yaml)
    with pytest.raises(ConfigError, match=r"override 'data.train=\[1': the value is not valid"):
        load_config(None, ["data.train=[1"])
    (tmp_path / "x.npz").write_bytes(b"not an archive" * 20)
    with pytest.raises(ValueError, match=r"x.npz: not a readable big_vision .npz .*NumPy archive"):
        from_big_vision(tmp_path / "x.npz")
    model_dir = save_pretrained(create_model("clippo-mu/16", image_size=32), tmp_path / "m")
    config = model_dir / "config.json"
    good = config.read_text()
    for text, message in [
        ("{nope", "config.json: not valid JSON"),
        ("[1, 2]", "config.json: expected a JSON object, got list"),
        (good.replace('"out_dim"', '"out_dims"'), "config.json: not a valid model config"),
    ]:
        config.write_text(text)
        with pytest.raises(ValueError, match=message):
            from_pretrained(model_dir)
    config.write_text(good)
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="model.safetensors: unreadable, truncated"):
        from_pretrained(model_dir)
    other = save_pretrained(create_model("clippo-mu/16", image_size=48), tmp_path / "o")
    weights.write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="weights do not match config.json"):
        from_pretrained(model_dir)


def test_a_read_only_work_directory_is_one_line(openclipart_small, tmp_path, capsys):
    import os

    if os.geteuid() == 0:  # root writes anywhere; a file in the way fails the same code path
        (tmp_path / "w").write_text("a file where the work directory should be")
    else:
        (tmp_path / "w").mkdir(mode=0o500)
    sets = tiny_cli_args(openclipart_small)
    assert main(["train", "demo", "--workdir", str(tmp_path / "w"), *sets]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and err[0].startswith("clippo train: error:")
        and str(tmp_path / "w") in err[0]
    )


def test_encode_text_checks_its_input_and_works_in_chunks():
    from clippo.factory import create_model

    model = create_model("clippo-mu/16", image_size=32, out_dim=16).eval()
    texts = [f"caption number {i}" for i in range(70)]
    with torch.no_grad():
        whole = model.encode_text(texts)
        chunked = model.encode_text(texts, batch_size=16)
    torch.testing.assert_close(chunked, whole)
    with pytest.raises(ValueError, match="no texts to encode"):
        model.encode_text([])
    with pytest.raises(TypeError, match="got bytes: decode them first"):
        model.encode_text(b"a cat")
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        model.encode_text(["a", 3])


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"eval.sets.val.evaluators.zeroshot.prompts": "bogus"}, "bogus"),
        ({"eval.sets.val.data": "/nonexistent/val.tar"}, "/nonexistent/val.tar"),
        ({"eval.batch_size": 0}, "eval.batch_size must be positive"),
    ],
)
def test_what_evaluation_needs_is_checked_before_the_first_step(
    openclipart_small, tmp_path, capsys, extra, message
):
    assert (
        main(
            ["train", "demo", "--workdir", str(tmp_path), *tiny_cli_args(openclipart_small, extra)]
        )
        == 2
    )
    assert message in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "model").exists()
