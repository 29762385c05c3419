"""The training loop: exact resume, the NaN stop, work-directory safety, the CLI end to end."""

import json
import re
import shutil

import pytest
import torch
from helpers import tiny_cli_args, tiny_run_tree
from safetensors.torch import load_file

import clippo.losses
from clippo.cli import main
from clippo.data import InMemoryShardDataset
from clippo.jobs.pretrain import train
from clippo.train.checkpoint import list_checkpoints
from clippo.train.config import load_config
from clippo.train.distributed import DistEnv
from clippo.train.engine import NonFiniteLossError
from clippo.train.tasks import build_model, train_batches


def _cfg(shards, steps, **extra):
    tree = tiny_run_tree(shards, captions="first", train_examples=60) | {
        "optim": {
            "name": "adafactor",
            "lr": 1e-3,
            "wd": 1e-4,
            "schedule": {
                "decay_type": "rsqrt",
                "timescale": 5,
                "warmup_steps": 3,
                "cooldown_steps": 3,
            },
        },
        "train": {"total_steps": steps, "log_every": 5, "ckpt_every": 10, "keep_ckpts": 2},
    }
    for k, v in extra.items():
        tree[k].update(v)
    return load_config(tree)


def test_resume_continues_exactly(openclipart_small, tmp_path):
    cfg = _cfg(openclipart_small, 20, train={"keep_ckpts": 5})
    train(cfg, tmp_path / "straight")
    final = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    # Simulate a job killed after its step-10 checkpoint: drop everything written later.
    ckpts = dict(list_checkpoints(tmp_path / "straight" / "checkpoints"))
    assert sorted(ckpts) == [10, 20]
    ckpts[20].unlink()
    for f in (tmp_path / "straight" / "model").iterdir():
        f.unlink()
    train(cfg, tmp_path / "straight", resume=True)
    resumed = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    assert final.keys() == resumed.keys()
    for k in final:
        torch.testing.assert_close(resumed[k], final[k], rtol=0, atol=0, msg=k)


def test_in_memory_data_trains_and_resumes_like_streaming(openclipart_small, tmp_path):
    streaming = _cfg(openclipart_small, 10, train={"ckpt_every": 5})
    in_memory = _cfg(openclipart_small, 10, train={"ckpt_every": 5}, data={"in_memory": True})
    reader = train_batches(in_memory, build_model(in_memory), DistEnv(), 0)
    assert isinstance(reader, InMemoryShardDataset) and reader.nbytes > 0
    train(streaming, tmp_path / "streaming")
    train(in_memory, tmp_path / "in_memory")
    # A streaming run resumed from its step-5 checkpoint with the data in memory.
    shutil.copytree(tmp_path / "streaming", tmp_path / "switched")
    ckpts = dict(list_checkpoints(tmp_path / "switched" / "checkpoints"))
    ckpts[10].unlink()
    shutil.rmtree(tmp_path / "switched" / "model")
    train(in_memory, tmp_path / "switched", resume=True)
    want = load_file(tmp_path / "streaming" / "model" / "model.safetensors")
    for run in ("in_memory", "switched"):
        got = load_file(tmp_path / run / "model" / "model.safetensors")
        assert got.keys() == want.keys()
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=f"{run}: {k}")


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(
    openclipart_small, tmp_path, monkeypatch
):
    calls = {"n": 0}
    real = clippo.losses.contrastive_loss

    def poisoned(zimg, ztxt, scale):
        calls["n"] += 1
        loss, extras = real(zimg, ztxt, scale)
        return (loss * float("nan") if calls["n"] == 13 else loss), extras

    monkeypatch.setattr(clippo.losses, "contrastive_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 13"):
        train(_cfg(openclipart_small, 20), tmp_path)
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [10]
    assert not (tmp_path / "model").exists()


def test_refuses_to_overwrite_checkpoints_without_resume(openclipart_small, tmp_path):
    cfg = _cfg(openclipart_small, 10)
    train(cfg, tmp_path)
    with pytest.raises(FileExistsError, match="pass --resume"):
        train(cfg, tmp_path)


def test_cli_train_writes_workdir_and_evaluates(openclipart_small, tmp_path, capsys):
    out, stats = openclipart_small
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(_cfg(openclipart_small, 10).to_dict()))
    assert (
        main(
            [
                "train",
                str(cfg),
                "--workdir",
                str(tmp_path / "w"),
                "--set",
                "train.ckpt_every=4",
                "--set",
                "train.keep_ckpts=1",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "i2t_recall@1" in printed and "zeroshot_top1" in printed
    w = tmp_path / "w"
    assert [s for s, _ in list_checkpoints(w / "checkpoints")] == [10]
    records = [json.loads(x) for x in (w / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [5, 10]
    assert 0.0 <= records[-1]["val/i2t_recall@1"] <= 1.0
    assert (w / "model" / "config.json").is_file()


def test_cli_reports_bad_config_key(tmp_path, capsys):
    assert (
        main(["train", "clippo_b16_yfcc", "--workdir", str(tmp_path), "--set", "optim.lrr=1"]) == 2
    )
    assert "unknown config key 'optim.lrr'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["clip-mu/16", "1t-clip-mu/16"])
def test_tokenized_baselines_train_evaluate_and_reload(
    name, openclipart_small, openclipart_tokenizer, tmp_path
):
    from clippo.models import from_pretrained

    options = {"image_size": 32, "out_dim": 16, "max_len": 16}
    model = {"name": name, "options": {**options, "tokenizer": str(openclipart_tokenizer)}}
    cfg = _cfg(openclipart_small, 4, model=model, train={"log_every": 2})
    results = train(cfg, tmp_path)  # evaluates the config's sets
    assert torch.isfinite(torch.tensor(results["train/loss"]))
    assert 0.0 <= results["val/i2t_recall@1"] <= 1.0 and "val/zeroshot_top1" in results
    loaded = from_pretrained(tmp_path / "model")
    assert loaded.cfg.max_len == 16 and loaded.vocab_size == 300
    assert loaded.encode_text(["a red car"]).shape == (1, 16)


@pytest.mark.parametrize("config", ["clip_demo", "onetower_clip_demo"])
def test_cli_trains_packaged_baseline_configs(
    config, openclipart_small, openclipart_tokenizer, tmp_path, capsys
):
    extra = {
        "model.options.tokenizer": openclipart_tokenizer,
        "model.options.depth": 1,
        "model.options.max_len": 16,
    }
    sets = tiny_cli_args(openclipart_small, extra)
    assert main(["train", config, "--workdir", str(tmp_path), *sets]) == 0
    assert "i2t_recall@1" in capsys.readouterr().out
    # The final evaluation is also metrics.json, equal to metrics.jsonl's last evaluation row.
    final = json.loads((tmp_path / "metrics.json").read_text())
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last_eval = [r for r in rows if "val/i2t_recall@1" in r][-1]
    assert final == {k: v for k, v in last_eval.items() if k != "step"}
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["model_type"] == ("clip" if config == "clip_demo" else "1t-clip")
    assert saved["tokenizer"] == "tokenizer.model"


def test_cli_names_missing_training_shards(tmp_path, capsys):
    assert main(["train", "demo", "--workdir", str(tmp_path)]) == 2
    assert "data.train is not set" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


def test_cli_eval_uses_the_models_own_run_config_by_default(openclipart_small, tmp_path, capsys):
    train(_cfg(openclipart_small, 5), tmp_path / "w")
    assert main(["eval", "--model", str(tmp_path / "w" / "model")]) == 0
    out = capsys.readouterr().out
    assert f"the run's config {tmp_path / 'w' / 'config.yaml'}" in out and "val/i2t_recall@1" in out
    (tmp_path / "lone").mkdir()
    for f in (tmp_path / "w" / "model").iterdir():
        (tmp_path / "lone" / f.name).write_bytes(f.read_bytes())
    assert main(["eval", "--model", str(tmp_path / "lone")]) == 2
    assert (
        "config.yaml not found (the model's own run config): pass --config"
        in capsys.readouterr().err
    )


def test_init_at_another_image_size_resamples_both_towers(tmp_path):
    from clippo.factory import create_model
    from clippo.models import from_pretrained

    torch.manual_seed(0)
    start = create_model("clippo-untied-mu/16", image_size=32, out_dim=16)  # two ViTs
    start.save_pretrained(tmp_path / "start")
    tree = {"model": {"init": str(tmp_path / "start"), "options": {"image_size": 48}}}
    model = build_model(load_config(tree))
    assert model.image_size == 48 and model.cfg.render["image_size"] == 48
    assert model.renderer("a").shape == (48, 48)
    old, new = start.state_dict(), model.state_dict()
    assert old.keys() == new.keys()
    for key in old:
        if key.endswith("pos_embed"):  # 2x2 -> 3x3 grid, the corners kept (bilinear)
            assert new[key].shape == (1, 9, start.cfg.vit.width)
            torch.testing.assert_close(new[key][0, [0, 2, 6, 8]], old[key][0], msg=key)
        else:
            torch.testing.assert_close(new[key], old[key], rtol=0, atol=0, msg=key)
    assert model.encode_text(["ab", "c"]).shape == (2, 16)
    model.save_pretrained(tmp_path / "big")  # the resized model is a plain model directory
    assert from_pretrained(tmp_path / "big").cfg.vit.image_size == 48


def test_init_options_must_describe_the_loaded_model(tmp_path):
    from clippo.factory import create_model

    torch.manual_seed(0)
    start = create_model("clippo-mu/16", image_size=32, out_dim=16)
    start.save_pretrained(tmp_path)
    same = {"image_size": 32, "out_dim": 16, "pool_type": start.cfg.vit.pool_type}
    model = build_model(load_config({"model": {"init": str(tmp_path), "options": same}}))
    for key, value in start.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    for options, named in (
        ({"depth": 12}, "model.options.depth=12 but"),
        ({"out_dim": 8}, "model.options.out_dim=8 but"),
        ({"colour": 1}, "has '(not an option of this model)'"),
    ):
        cfg = load_config({"model": {"init": str(tmp_path), "options": options}})
        with pytest.raises(ValueError, match=re.escape(named)):
            build_model(cfg)
