"""The engine's task interface: any task trains, logs, checkpoints, resumes exactly and is
evaluated on schedule; the classification task (GLUE) is one such task."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CountingEvaluation, RegressionTask
from helpers import engine_cfg as _cfg
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from clippo.data.glue import ClassificationBatches, TaskSplit, encode_labels, read_task
from clippo.models import ViT, from_pretrained
from clippo.models.heads import join_pair
from clippo.train.checkpoint import list_checkpoints
from clippo.train.config import load_config, resolve_config
from clippo.train.engine import NonFiniteLossError, run
from clippo.train.tasks import ClassificationTask

GLUE = Path(__file__).parent / "fixtures" / "glue"


pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(workdir):
    return [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_any_task_trains_logs_and_evaluates_on_schedule(tmp_path):
    evaluation = CountingEvaluation(every=4)
    last = run(RegressionTask(10), _cfg(), tmp_path, evaluation=evaluation)
    assert evaluation.steps == [4, 8, 10]
    rows = _rows(tmp_path)
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == [2, 4, 6, 8, 10]
    assert {"train/abs_error", "train/head_norm", "train/lr", "train/grad_norm"} <= set(rows[0])
    assert [r["probe/step"] for r in rows if "probe/step" in r] == [4.0, 8.0, 10.0]
    assert last["probe/final"] == 1.0 and train_rows[-1]["train/loss"] < train_rows[0]["train/loss"]
    # The final model is written in from_pretrained form, whatever the task's model is.
    assert isinstance(from_pretrained(tmp_path / "model"), ViT)


def test_any_task_resumes_exactly(tmp_path):
    run(RegressionTask(12), _cfg(), tmp_path / "a")
    final = load_file(tmp_path / "a" / "model" / "model.safetensors")
    ckpts = dict(list_checkpoints(tmp_path / "a" / "checkpoints"))
    assert sorted(ckpts) == [4, 8, 12]
    for step in (8, 12):
        ckpts[step].unlink()
    run(RegressionTask(12), _cfg(), tmp_path / "a", resume=True)
    resumed = load_file(tmp_path / "a" / "model" / "model.safetensors")
    for k in final:
        torch.testing.assert_close(resumed[k], final[k], rtol=0, atol=0, msg=k)


def test_a_non_finite_loss_stops_the_task_naming_the_step(tmp_path):
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 6"):
        run(RegressionTask(10, poison_at=6), _cfg(), tmp_path)
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [4]


def test_classification_batches_follow_berts_epoch_order_and_resume():
    split = TaskSplit([f"t{i}" for i in range(10)], None, ["0", "1"] * 5)
    labels = encode_labels("sst2", split, ("0", "1"))
    kw = dict(
        batch_size=4, epochs=2, text_transform=lambda t: np.array([int(t[1:])]), join=join_pair
    )
    order = [b["index"] for b in ClassificationBatches(split, labels, **kw)]
    rng = np.random.default_rng(0)  # the fine-tuning loop's order: a permutation per epoch
    expected = []
    for _ in range(2):
        perm = rng.permutation(10)
        expected += [perm[i : i + 4].tolist() for i in range(0, 10, 4)]
    assert order == expected and [len(i) for i in order] == [4, 4, 2, 4, 4, 2]
    first = next(iter(ClassificationBatches(split, labels, **kw)))
    assert first["text_input"][:, 0].tolist() == order[0]
    assert first["label"].tolist() == labels[order[0]].tolist()
    resumed = [b["index"] for b in ClassificationBatches(split, labels, start_batch=3, **kw)]
    assert resumed == expected[3:]
    # Two loader workers hand out the same batches in the same order.
    workers = DataLoader(ClassificationBatches(split, labels, **kw), batch_size=None, num_workers=2)
    assert [b["index"] for b in workers] == expected
    ranks = [[b["index"] for b in ClassificationBatches(split, labels, rank=r, world_size=2, **kw)]
             for r in (0, 1)]  # fmt: skip
    assert [a + b for a, b in zip(*ranks, strict=True)] != expected  # interleaved, not halves
    assert sorted(ranks[0][0] + ranks[1][0]) == sorted(expected[0])


def test_classification_task_resumes_exactly_through_the_engine(tmp_path):
    cfg = load_config(
        resolve_config("glue"),
        ["model.name=clippo-mu/16", "model.options.image_size=32", "data.batch_size=3",
         "data.workers=0", "finetune.epochs=3", "train.ckpt_every=2", "train.keep_ckpts=5"],
    )  # fmt: skip
    splits = read_task(GLUE, "sst2")
    vocab = ("0", "1")
    labels = encode_labels("sst2", splits["train"], vocab)
    task = ClassificationTask(cfg, splits["train"], labels, vocab)
    assert task.total_steps == 6  # 6 examples, batch 3, 3 epochs
    run(task, cfg, tmp_path)
    final = load_file(tmp_path / "model" / "model.safetensors")
    for step, path in list_checkpoints(tmp_path / "checkpoints"):
        if step > 2:
            path.unlink()
    run(ClassificationTask(cfg, splits["train"], labels, vocab), cfg, tmp_path, resume=True)
    resumed = load_file(tmp_path / "model" / "model.safetensors")
    for k in final:
        torch.testing.assert_close(resumed[k], final[k], rtol=0, atol=0, msg=k)
    # The fine-tuned classifier is a model directory like any other.
    loaded = from_pretrained(tmp_path / "model")
    assert loaded.cfg.labels == ["0", "1"] and loaded.classify(["a fine film"]).shape == (1, 2)


def test_auto_precision_uses_bf16_only_where_the_hardware_has_it(monkeypatch):
    import clippo.train.engine as engine

    cpu = torch.device("cpu")
    x = torch.ones(2, 2)
    for native, dtype in ((False, torch.float32), (True, torch.bfloat16)):
        monkeypatch.setattr(engine, "native_bf16", lambda device, n=native: n)
        with engine.autocast_for("auto", cpu)():
            assert (x @ x).dtype == dtype
    with engine.autocast_for("fp32", cpu)():
        assert (x @ x).dtype == torch.float32
    with engine.autocast_for("bf16", cpu)():  # asked for explicitly: bf16 even if emulated
        assert (x @ x).dtype == torch.bfloat16
