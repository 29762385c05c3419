"""Training at scale, proved on CPU: GradCache accumulation, local and sigmoid losses, FSDP2,
torch.compile; each against the reference computation (one process, the whole batch)."""

import json
import math
import os
import shutil
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch.utils.data import IterableDataset

from clippo.losses import ContrastiveLoss, sigmoid_loss
from clippo.train.checkpoint import list_checkpoints
from clippo.train.config import ConfigError, load_config
from clippo.train.distributed import DistEnv
from clippo.train.engine import run
from clippo.train.tasks import ContrastiveTask

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGES, PAIRS, SIZE = 8, 4, 32  # rows of a global batch; pixels a side


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    return z / z.norm(dim=1, keepdim=True)


def test_sigmoid_loss_equals_direct_formula():
    zimg, ztxt = _unit(5, 4, 0), _unit(5, 4, 1)
    t, b = 10.0, -10.0
    direct = 0.0
    for i in range(5):
        for j in range(5):
            y = 1.0 if i == j else -1.0
            logit = t * float(zimg[i] @ ztxt[j]) + b
            direct -= math.log(1.0 / (1.0 + math.exp(-y * logit)))
    direct /= 5
    loss, extras = sigmoid_loss(zimg, ztxt, torch.tensor(t), torch.tensor(b))
    assert loss.item() == pytest.approx(direct, rel=1e-12)
    # The same through the module (one process: rows = the whole batch).
    loss2, _ = ContrastiveLoss("sigmoid")(zimg, ztxt, torch.tensor(t), torch.tensor(b))
    assert loss2.item() == pytest.approx(direct, rel=1e-12)
    assert 0.0 <= extras["accuracy"].item() <= 1.0


def test_config_names_valid_losses_and_shardings():
    with pytest.raises(ConfigError, match="loss.name must be one of softmax, sigmoid, got 'nce'"):
        load_config({"loss": {"name": "nce"}})
    with pytest.raises(ConfigError, match="train.sharding must be one of ddp, fsdp"):
        load_config({"train": {"sharding": "zero3"}})
    with pytest.raises(ConfigError, match="train.accum_steps must be positive"):
        load_config({"train": {"accum_steps": 0}})
    with pytest.raises(ConfigError, match="unknown config key 'train.accum_freq'"):
        load_config({"train": {"accum_freq": 2}})


def _tree(**over) -> dict:
    tree = {
        "model": {"name": "clippo-mu/16", "options": {"image_size": SIZE, "out_dim": 16}},
        "data": {"train": "synthetic", "batch_size": IMAGES, "workers": 0},
        "optim": {
            "name": "adafactor",
            "lr": 1e-2,
            "wd": 1e-4,
            "grad_clip_norm": 0.05,  # small enough to clip: the norm must be the global one
            "kwargs": {"min_dim_size_to_factor": 4},  # factor even mu's small kernels
            "schedule": {"decay_type": "cosine", "warmup_steps": 1},
        },
        "train": {"total_steps": 3, "log_every": 1, "ckpt_every": 2, "keep_ckpts": 5},
    }
    for section, values in over.items():
        tree[section] = {**tree.get(section, {}), **values}
    return tree


def _global_batch(i: int) -> dict:
    g = torch.Generator().manual_seed(100 + i % 3)
    return {
        "image": torch.rand(IMAGES, 3, SIZE, SIZE, generator=g) * 2 - 1,
        "text_input": torch.randint(0, 256, (IMAGES, SIZE, SIZE), generator=g, dtype=torch.uint8),
        "pair_text_a_input": torch.randint(0, 256, (PAIRS, SIZE, SIZE), generator=g).byte(),
        "pair_text_b_input": torch.randint(0, 256, (PAIRS, SIZE, SIZE), generator=g).byte(),
    }


class _Batches(IterableDataset):
    """Batch i is a fixed function of i; each process reads its contiguous share of rows."""

    def __init__(self, start: int, rank: int, world: int):
        self.start, self.rank, self.world = start, rank, world

    def __iter__(self):
        i = self.start
        while True:
            out = {}
            for k, v in _global_batch(i).items():
                n = len(v) // self.world
                out[k] = v[self.rank * n : (self.rank + 1) * n]
            yield out
            i += 1


class SyntheticContrastiveTask(ContrastiveTask):
    """The contrastive task on random images, rendered-text pixels and text pairs."""

    def batches(self, model, env: DistEnv, start_batch: int):
        return _Batches(start_batch, env.rank, env.world_size)


def _grads(task, model, batch, steps):
    model.zero_grad(set_to_none=True)
    if steps == 1:
        task.loss(model, batch, torch.device("cpu"), _no_autocast).loss.backward()
    else:
        task.accumulate(model, batch, torch.device("cpu"), _no_autocast, steps)
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def _no_autocast():
    import contextlib

    return contextlib.nullcontext()


@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
def test_gradcache_micro_batches_give_the_whole_batch_gradient(loss):
    cfg = load_config(_tree(loss={"name": loss}))
    task = SyntheticContrastiveTask(cfg)
    torch.manual_seed(0)
    model = task.build_model()
    batch = _global_batch(0)  # image/alt-text rows and CLIPPO's text/text pairs
    whole = _grads(task, model, batch, 1)
    for steps in (2, 4):
        accumulated = _grads(task, model, batch, steps)
        assert whole.keys() == accumulated.keys()
        for k in whole:
            torch.testing.assert_close(accumulated[k], whole[k], rtol=1e-4, atol=1e-6, msg=k)
    if loss == "sigmoid":
        assert model.logit_bias.item() == -10.0 and whole["b"].abs().item() > 0
    # Under FSDP the engine passes set_requires_gradient_sync: one reduction, in the last.
    calls = []
    task.accumulate(model, batch, torch.device("cpu"), _no_autocast, 3, sync_gradients=calls.append)
    assert calls == [False, False, True]
    with pytest.raises(ValueError, match="accum_steps 5 exceeds the 4 text pairs"):
        _grads(task, model, batch, 5)


def _final(workdir):
    return load_file(workdir / "model" / "model.safetensors")


def _rows(workdir):
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "train/loss" in r]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Name -> (config overrides, what it must equal: a single-process run's name).
VARIANTS = {
    "ddp": ({}, "softmax"),
    "ddp_local": ({"loss": {"local": True}}, "softmax"),
    "ddp_local_accum": ({"loss": {"local": True}, "train": {"accum_steps": 2}}, "softmax"),
    "ddp_sigmoid": ({"loss": {"name": "sigmoid"}}, "sigmoid"),
    "fsdp": ({"train": {"sharding": "fsdp"}}, "softmax"),
    "fsdp_sigmoid_adamw": (
        {
            "train": {"sharding": "fsdp"},
            "loss": {"name": "sigmoid"},
            "optim": {"name": "adamw", "kwargs": {}},
        },
        "sigmoid_adamw",
    ),
    # GradCache under FSDP2: gradients reduce-scattered once, in the last micro-batch.
    "fsdp_accum": ({"train": {"sharding": "fsdp", "accum_steps": 2}}, "softmax"),
    # AdamW's multi-tensor and fused kernels on the shards.
    "fsdp_sigmoid_adamw_foreach": (
        {
            "train": {"sharding": "fsdp"},
            "loss": {"name": "sigmoid"},
            "optim": {"name": "adamw", "kwargs": {"foreach": True}},
        },
        "sigmoid_adamw",
    ),
    "fsdp_sigmoid_adamw_fused_accum": (
        {
            "train": {"sharding": "fsdp", "accum_steps": 2},
            "loss": {"name": "sigmoid"},
            "optim": {"name": "adamw", "kwargs": {"fused": True}},
        },
        "sigmoid_adamw",
    ),
}
SINGLE = {
    "softmax": {},
    "sigmoid": {"loss": {"name": "sigmoid"}},
    "sigmoid_adamw": {"loss": {"name": "sigmoid"}, "optim": {"name": "adamw", "kwargs": {}}},
}


class _WholeWeights:
    """An evaluator that reads whole weights (on the main process only, as evaluators do)."""

    def due(self, step, final):
        return final

    def run(self, model, step, final):
        return {"probe/head_sum": model.image.head.weight.sum().item()}


def _resume_with(workdir, tree, sharding):
    """Drops the last checkpoint and the model, then resumes under ``sharding``."""
    if dist.get_rank() == 0:
        ckpts = dict(list_checkpoints(workdir / "checkpoints"))
        ckpts[3].unlink()
        shutil.rmtree(workdir / "model")
    dist.barrier()
    cfg = load_config(_tree(**{**tree, "train": {**tree.get("train", {}), "sharding": sharding}}))
    run(SyntheticContrastiveTask(cfg), cfg, workdir, resume=True)


def _worker(rank, port, root, out):
    from pathlib import Path

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
    )  # fmt: skip
    root = Path(root)
    try:
        for name, (tree, _) in VARIANTS.items():
            cfg = load_config(_tree(**tree))
            run(SyntheticContrastiveTask(cfg), cfg, root / name, evaluation=_WholeWeights())
        # Checkpoints hold whole tensors: FSDP's resume under DDP, and DDP's under FSDP.
        shutil.copytree(root / "fsdp", root / "fsdp_then_ddp") if rank == 0 else None
        shutil.copytree(root / "ddp", root / "ddp_then_fsdp") if rank == 0 else None
        dist.barrier()
        _resume_with(root / "fsdp_then_ddp", VARIANTS["fsdp"][0], "ddp")
        _resume_with(root / "ddp_then_fsdp", VARIANTS["ddp"][0], "fsdp")
        out.put("ok" if rank == 0 else "ok1")
    except Exception:  # the test shows the worker's error, not a timeout
        import traceback

        out.put(f"rank {rank}: {traceback.format_exc()}")
        raise
    finally:
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def test_two_processes_equal_one_process_on_the_whole_batch(tmp_path):
    # DDP with the global and the local loss, with GradCache, with the sigmoid loss; FSDP2 with
    # Adafactor (factored moments on whole rows/columns, the global clipping norm), with
    # GradCache, with AdamW (per-parameter loop, foreach, fused); and a checkpoint of either
    # resumed under the other.
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, str(tmp_path), out)) for r in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sorted(results) == ["ok", "ok1"], results
    for name, tree in SINGLE.items():
        cfg = load_config(_tree(**tree))
        run(SyntheticContrastiveTask(cfg), cfg, tmp_path / f"single_{name}")
    single = {n: _final(tmp_path / f"single_{n}") for n in SINGLE}
    runs = {name: ref for name, (_, ref) in VARIANTS.items()}
    runs |= {"fsdp_then_ddp": "softmax", "ddp_then_fsdp": "softmax"}
    for name, ref in runs.items():
        got, want = _final(tmp_path / name), single[ref]
        assert got.keys() == want.keys(), name
        for k in got:
            if k.endswith("key.bias"):
                # Exactly zero true gradient (softmax ignores a shift of every key): what
                # Adafactor and Adam, which normalise the step, make of its rounding noise is
                # arbitrary.
                continue
            torch.testing.assert_close(got[k], want[k], rtol=1e-3, atol=1e-5, msg=f"{name}: {k}")
        if name in VARIANTS:  # evaluation saw the trained weights, whole, under FSDP too
            lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
            rows = [json.loads(x) for x in lines]
            probe = [r["probe/head_sum"] for r in rows if "probe/head_sum" in r]
            assert probe == [pytest.approx(got["image.head.weight"].sum().item(), rel=1e-6)]
        # Adaptive steps hide a gradient's scale; the logged global norm and loss do not.
        pairs = zip(_rows(tmp_path / name), _rows(tmp_path / f"single_{ref}"), strict=True)
        for row, ref_row in pairs:
            for key in ("train/loss", "train/grad_norm"):
                assert row[key] == pytest.approx(ref_row[key], rel=1e-4), (name, row["step"], key)
    # The parameters moved: the test compares training, not initialisation.
    before = load_config(_tree())
    torch.manual_seed(0)
    init = SyntheticContrastiveTask(before).build_model().state_dict()
    assert not torch.equal(init["image.head.weight"], single["softmax"]["image.head.weight"])


@pytest.mark.slow
def test_compiled_training_equals_eager(tmp_path):
    # Slow: inductor compiles the forward and backward with the C++ compiler (~1 min on 2 cores).
    for name, compiled in (("eager", False), ("compiled", True)):
        cfg = load_config(_tree(train={"total_steps": 2, "compile": compiled}))
        run(SyntheticContrastiveTask(cfg), cfg, tmp_path / name)
    eager, compiled = _final(tmp_path / "eager"), _final(tmp_path / "compiled")
    for k in eager:
        if not k.endswith("key.bias"):  # see above: zero true gradient
            torch.testing.assert_close(compiled[k], eager[k], rtol=1e-3, atol=1e-5, msg=k)
    for row, ref in zip(_rows(tmp_path / "compiled"), _rows(tmp_path / "eager"), strict=True):
        assert row["train/loss"] == pytest.approx(ref["train/loss"], rel=1e-4)


def test_a_sigmoid_trained_model_keeps_its_bias_in_its_directory(tmp_path):
    from clippo.models import from_pretrained

    cfg = load_config(_tree(loss={"name": "sigmoid", "bias_init": -7.0}))
    model = SyntheticContrastiveTask(cfg).build_model()
    assert model.logit_bias.item() == -7.0 and model.logit_scale.exp().item() == pytest.approx(10)
    model.save_pretrained(tmp_path)
    loaded = from_pretrained(tmp_path)
    assert loaded.cfg.bias_init == -7.0 and loaded.logit_bias.item() == -7.0
    # A softmax-trained start point gets the bias when fine-tuned with the sigmoid loss.
    plain = SyntheticContrastiveTask(load_config(_tree())).build_model()
    assert plain.logit_bias is None
    plain.save_pretrained(tmp_path / "plain")
    tree = _tree(loss={"name": "sigmoid"}, model={"init": str(tmp_path / "plain")})
    assert SyntheticContrastiveTask(load_config(tree)).build_model().logit_bias.item() == -10.0
