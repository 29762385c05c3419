"""Optimizers against big_vision's optax chain (fixtures from scripts/make_optim_fixtures.py)."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from clippo.train.config import ConfigError, load_config
from clippo.train.optim import (
    Adafactor,
    AdamW,
    ScheduleMultiplier,
    build_optimizer,
    clip_grad_norm_,
    param_groups,
)
from clippo.train.schedules import create_schedule

FIXTURES = Path(__file__).parent / "fixtures" / "optim"
INPUTS = np.load(FIXTURES / "inputs.npz")  # initial params, per-step grads, lr/wd/schedule
REF = np.load(FIXTURES / "adafactor.npz")  # big_vision's params and state after every step
CFG = json.loads(str(INPUTS["config"]))
NAMES = [k.split("/", 1)[1] for k in INPUTS if k.startswith("param0/")]
N_STEPS = CFG["total_steps"]
BF16_ULP = 2.0**-7  # one bfloat16 ulp is at most this fraction of the value


def fixture(kind: str, name: str) -> torch.Tensor:
    data = INPUTS if kind.startswith(("param0", "grad")) else REF
    return torch.tensor(data[f"{kind}/{name}"])


class Tiny(nn.Module):
    """The fixture's parameters as a module: Linear and Conv2d kernels decay, the rest not."""

    TO_FIXTURE = {
        "dense.weight": "dense/kernel",
        "dense.bias": "dense/bias",
        "conv.weight": "conv/kernel",
        "head.weight": "head/kernel",
        "t": "t",
    }

    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(32, 33)
        self.conv = nn.Conv2d(32, 34, (2, 1), bias=False)
        self.head = nn.Linear(4, 6, bias=False)
        self.t = nn.Parameter(torch.zeros(1))

        with torch.no_grad():
            for name, p in self.named_parameters():
                p.copy_(torch.tensor(INPUTS[f"param0/{self.TO_FIXTURE[name]}"]))


def run_tiny(name: str, steps: int, **opt_kwargs):
    """Builds the optimizer for Tiny as the loop does and takes ``steps`` fixture steps."""
    model = Tiny()
    schedule = create_schedule(N_STEPS, **CFG["schedule"])
    opt, sched = build_optimizer(
        model,
        name=name,
        lr=CFG["lr"],
        wd=CFG["wd"],
        schedule=schedule,
        grad_clip_norm=1.0,
        **opt_kwargs,
    )
    for k in range(steps):
        for pname, p in model.named_parameters():
            p.grad = torch.tensor(INPUTS[f"grad{k}/{Tiny.TO_FIXTURE[pname]}"])
        opt.step()
        sched.step()
    return model, opt, sched


def test_adamw_trajectory_matches_big_vision():
    ref = np.load(FIXTURES / "adamw.npz")
    model, _, _ = run_tiny("adamw", N_STEPS)
    for pname, p in model.named_parameters():
        want = ref[f"param{N_STEPS}/{Tiny.TO_FIXTURE[pname]}"]
        np.testing.assert_allclose(p.detach().numpy(), want, rtol=1e-6, atol=1e-6, err_msg=pname)


def test_multi_tensor_adamw_matches_big_vision_and_the_per_parameter_loop():
    ref = np.load(FIXTURES / "adamw.npz")
    model, opt, _ = run_tiny("adamw", N_STEPS, foreach=True)
    loop, _, _ = run_tiny("adamw", N_STEPS)
    assert opt.foreach
    for (pname, p), q in zip(model.named_parameters(), loop.parameters(), strict=True):
        want = ref[f"param{N_STEPS}/{Tiny.TO_FIXTURE[pname]}"]
        np.testing.assert_allclose(p.detach().numpy(), want, rtol=1e-6, atol=1e-6, err_msg=pname)
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def _run_adamw(steps: int, schedule: dict, **opt_kwargs) -> nn.Module:
    """Tiny through ``steps`` fixture steps with lr multipliers: 3x, 0 (a frozen group that
    still decays) and 1, and wd scaled by lr as ``optim.wd_times_lr`` gives it."""
    model = Tiny()
    opt, sched = build_optimizer(
        model,
        name="adamw",
        lr=CFG["lr"],
        wd=CFG["wd"] * CFG["lr"],
        schedule=create_schedule(steps, **schedule),
        grad_clip_norm=0.5,
        lr_mults={"dense\\..*": 3.0, "head\\.weight": 0.0},
        **opt_kwargs,
    )
    for k in range(steps):
        for pname, p in model.named_parameters():
            p.grad = torch.tensor(INPUTS[f"grad{k % N_STEPS}/{Tiny.TO_FIXTURE[pname]}"])
        opt.step()
        sched.step()
    return model


@pytest.mark.parametrize(
    "schedule",
    [
        CFG["schedule"],
        {"decay_type": "cosine", "warmup_steps": 2},
        {"decay_type": "linear", "warmup_steps": 0, "linear_end": 0.1},
    ],
    ids=["rsqrt", "cosine", "linear"],
)
def test_fused_adamw_equals_the_per_parameter_loop_and_foreach(schedule):
    steps = 12
    loop = _run_adamw(steps, schedule)
    foreach = _run_adamw(steps, schedule, foreach=True)
    fused = _run_adamw(steps, schedule, fused=True)
    start = Tiny()
    for (pname, p), q, r, p0 in zip(
        loop.named_parameters(), foreach.parameters(), fused.parameters(), start.parameters(),
        strict=True,
    ):  # fmt: skip
        assert not torch.equal(p, p0), pname  # every group moved, the frozen one by decay
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7, msg=pname)
        torch.testing.assert_close(r, p, rtol=1e-6, atol=1e-7, msg=pname)


def test_fused_adamw_matches_big_vision_and_resumes_exactly():
    ref = np.load(FIXTURES / "adamw.npz")
    model, opt, _ = run_tiny("adamw", N_STEPS, fused=True)
    assert opt.fused
    for pname, p in model.named_parameters():
        want = ref[f"param{N_STEPS}/{Tiny.TO_FIXTURE[pname]}"]
        np.testing.assert_allclose(p.detach().numpy(), want, rtol=1e-6, atol=1e-6, err_msg=pname)
    half, half_opt, half_sched = run_tiny("adamw", N_STEPS // 2, fused=True)
    resumed = Tiny()
    resumed.load_state_dict(half.state_dict())
    schedule = create_schedule(N_STEPS, **CFG["schedule"])
    opt2, sched2 = build_optimizer(
        resumed, name="adamw", lr=CFG["lr"], wd=CFG["wd"], schedule=schedule,
        grad_clip_norm=1.0, fused=True,
    )  # fmt: skip
    opt2.load_state_dict(half_opt.state_dict())
    sched2.load_state_dict(half_sched.state_dict())
    for k in range(N_STEPS // 2, N_STEPS):
        for pname, p in resumed.named_parameters():
            p.grad = torch.tensor(INPUTS[f"grad{k}/{Tiny.TO_FIXTURE[pname]}"])
        opt2.step()
        sched2.step()
    for (pname, a), b in zip(model.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b), pname


def test_fused_adamw_refuses_eps_root_naming_the_config_key():
    with pytest.raises(ValueError, match="fused=True has no eps_root"):
        AdamW([torch.zeros(2)], lr=1.0, fused=True, eps_root=1e-8)
    tree = {"optim": {"name": "adamw", "kwargs": {"fused": True, "eps_root": 1e-8}}}
    with pytest.raises(ConfigError, match="optim.kwargs: fused=True has no eps_root"):
        load_config(tree)
    assert load_config({"optim": {"name": "adamw", "kwargs": {"fused": True}}}).optim.kwargs


def test_adafactor_trajectory_matches_big_vision():
    model, _, _ = run_tiny("adafactor", N_STEPS)
    lr, mults = CFG["lr"], [create_schedule(N_STEPS, **CFG["schedule"])(k) for k in range(N_STEPS)]
    for pname, p in model.named_parameters():
        name = Tiny.TO_FIXTURE[pname]
        ours, want = p.detach().numpy(), REF[f"param{N_STEPS}/{name}"]
        # A momentum entry that lands on a bfloat16 rounding tie may round the other way; such a
        # one-ulp flip moves the parameter by at most lr * mult * ulp(m) in each later step.
        m_max = max(np.abs(REF[f"m{k}/{name}"]).max() for k in range(1, N_STEPS + 1))
        slack = lr * sum(mults) * BF16_ULP * m_max / (1 - 0.9)
        err = np.abs(ours - want)
        assert err.max() <= 1e-6 + slack, pname
        assert np.mean(err <= 1e-6 * (1 + np.abs(want))) >= 0.99, pname


def test_adafactor_each_step_matches_big_vision_from_its_state():
    """Starts every step from big_vision's state, so float error never accumulates."""
    schedule = create_schedule(N_STEPS, **CFG["schedule"])
    for k in range(N_STEPS):
        params = {n: fixture(f"param{k}" if k else "param0", n) for n in NAMES}
        groups = [
            {"params": [params[n] for n in NAMES if n.endswith("kernel")], "wd": CFG["wd"]},
            {"params": [params[n] for n in NAMES if not n.endswith("kernel")], "wd": 0.0},
        ]
        opt = Adafactor(groups, CFG["lr"], grad_clip_norm=1.0)
        ScheduleMultiplier(opt, schedule).load_state_dict({"last_step": k})
        for n, p in params.items():
            if k:
                factored = Adafactor.factored_dims(p.shape, 32) is not None
                moments = ("v_row", "v_col") if factored else ("v",)
                opt.state[p] = {
                    "step": k,
                    "momentum": fixture(f"m{k}", n).bfloat16(),
                    **{v: fixture(f"{v}{k}", n) for v in moments},
                }
            p.grad = fixture(f"grad{k}", n)
        opt.step()
        for n, p in params.items():
            msg = f"step {k + 1} {n}"
            np.testing.assert_allclose(
                p.numpy(), REF[f"param{k + 1}/{n}"], rtol=1e-6, atol=1e-7, err_msg=msg
            )
            state = opt.state[p]
            for v in ("v_row", "v_col", "v"):
                if v in state:
                    np.testing.assert_allclose(
                        state[v].numpy(), REF[f"{v}{k + 1}/{n}"], rtol=1e-6, err_msg=msg
                    )
            assert state["momentum"].dtype == torch.bfloat16
            m, want = state["momentum"].float().numpy(), REF[f"m{k + 1}/{n}"]
            # Same round-to-nearest-even as JAX: nearly all entries equal bit for bit, and a
            # value within float error of a tie may differ by one bfloat16 ulp.
            assert np.all(np.abs(m - want) <= BF16_ULP * np.abs(want)), msg
            assert np.mean(m == want) >= 0.99, msg


def test_weight_decay_follows_schedule_not_lr():
    p = torch.full((3, 2), 2.0, requires_grad=True)
    for cls in (Adafactor, AdamW):
        p.data.fill_(2.0)
        opt = cls([p], lr=123.0, wd=0.1)
        ScheduleMultiplier(opt, lambda step: 0.5)
        p.grad = torch.zeros_like(p)  # both directions are exactly 0 for a zero gradient
        opt.step()
        torch.testing.assert_close(
            p.detach(), torch.full((3, 2), 2.0 * (1 - 0.5 * 0.1)), rtol=0, atol=0
        )


def test_clip_grad_norm_is_optax_clip_by_global_norm():
    grads = [torch.tensor([3.0, 0.0]), torch.tensor([[0.0], [4.0]])]
    norm = clip_grad_norm_(grads, 1.0)
    assert norm.item() == 5.0
    torch.testing.assert_close(grads[0], torch.tensor([3.0 / 5.0, 0.0]), rtol=0, atol=0)
    torch.testing.assert_close(grads[1], torch.tensor([[0.0], [4.0 / 5.0]]), rtol=0, atol=0)
    small = [torch.tensor([0.3, 0.4])]
    assert clip_grad_norm_(small, 1.0).item() == pytest.approx(0.5)
    assert small[0].tolist() == pytest.approx([0.3, 0.4])
    for no_clip in (None, 0.0):
        unclipped = [torch.tensor([30.0, 40.0])]
        assert clip_grad_norm_(unclipped, no_clip).item() == 50.0
        assert unclipped[0].tolist() == [30, 40]


def test_step_clips_a_copy_and_records_the_norm():
    p = nn.Parameter(torch.ones(4))
    p.grad = torch.full((4,), 5.0)
    opt = AdamW([p], lr=0.1, grad_clip_norm=1.0)
    opt.step()
    assert opt.grad_norm.item() == 10.0
    assert p.grad.tolist() == [5.0] * 4


@pytest.mark.parametrize(
    "shape,dims",
    [
        ((33, 32), (1, 0)),
        ((34, 32, 2, 1), (1, 0)),
        ((1, 196, 768), (1, 2)),
        ((768, 3, 16, 16), None),
        ((6, 4), None),
        ((40,), None),
    ],
)
def test_adafactor_factors_the_two_largest_dims_when_both_reach_32(shape, dims):
    assert Adafactor.factored_dims(torch.Size(shape), 32) == dims


def test_only_linear_and_conv_weights_decay_and_frozen_params_are_left_out():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, 8, 4)
            self.pos = nn.Parameter(torch.zeros(1, 4, 8))
            self.cls = nn.Parameter(torch.zeros(1, 1, 8))
            self.norm = nn.LayerNorm(8)
            self.mlp = nn.Linear(8, 8)
            self.temperature = nn.Parameter(torch.zeros(()))
            self.frozen = nn.Linear(8, 8).requires_grad_(False)

    model = Model()
    decay, no_decay = param_groups(model)
    assert decay == [model.patch.weight, model.mlp.weight]
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in no_decay) == [
        "cls",
        "mlp.bias",
        "norm.bias",
        "norm.weight",
        "patch.bias",
        "pos",
        "temperature",
    ]
    opt, _ = build_optimizer(model, lr=1e-3, wd=1e-4, schedule=lambda s: 1.0)
    assert [(len(g["params"]), g["wd"]) for g in opt.param_groups] == [(2, 1e-4), (7, 0.0)]


def test_unknown_optimizer_name_raises():
    with pytest.raises(ValueError, match=r"'lamb'.*adafactor, adamw, sgd"):
        build_optimizer(nn.Linear(2, 2), name="lamb", lr=1.0, wd=0.0, schedule=lambda s: 1.0)


@pytest.mark.parametrize("name", ["adafactor", "adamw"])
def test_resume_from_state_dict_continues_exactly(name):
    half = N_STEPS // 2
    straight, _, _ = run_tiny(name, N_STEPS)

    model, opt, sched = run_tiny(name, half)
    buf = io.BytesIO()
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buf
    )
    buf.seek(0)
    saved = torch.load(buf)

    resumed = Tiny()
    resumed.load_state_dict(saved["model"])
    schedule = create_schedule(N_STEPS, **CFG["schedule"])
    opt2, sched2 = build_optimizer(
        resumed, name=name, lr=CFG["lr"], wd=CFG["wd"], schedule=schedule
    )
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    if name == "adafactor":
        assert all(s["momentum"].dtype == torch.bfloat16 for s in opt2.state.values())
    for k in range(half, N_STEPS):
        for pname, p in resumed.named_parameters():
            p.grad = torch.tensor(INPUTS[f"grad{k}/{Tiny.TO_FIXTURE[pname]}"])
        opt2.step()
        sched2.step()
    for (pname, a), b in zip(straight.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b), pname


def test_adafactor_second_moment_decay_is_capped_at_beta2_cap():
    # decay_offset far below the step makes 1 - t**-0.8 ~ 0.9999, above the 0.999 cap.
    p = nn.Parameter(torch.ones(3))
    g = torch.tensor([0.5, -2.0, 1e-3])
    p.grad = g.clone()
    opt = Adafactor([p], lr=0.1, momentum=None, decay_offset=-100_000)
    opt.step()
    v = opt.state[p]["v"]
    torch.testing.assert_close(v, 0.001 * (g * g + 1e-30), rtol=1e-6, atol=0)
    torch.testing.assert_close(p.detach(), 1 - 0.1 * g / v.sqrt(), rtol=1e-6, atol=0)


def test_adafactor_shape_factors_a_linear_weight_like_its_jax_kernel():
    # A (64, 48) query weight seen as (heads=2, head_dim=32, width=48), as flax lays it out.
    torch.manual_seed(0)
    weight = nn.Parameter(torch.randn(64, 48))
    weight.adafactor_shape = (2, 32, 48)
    kernel = nn.Parameter(weight.detach().clone().view(2, 32, 48))
    plain = nn.Parameter(weight.detach().clone())
    opts = [Adafactor([p], lr=0.1, wd=0.01) for p in (weight, kernel, plain)]
    for _ in range(3):
        grad = torch.randn(64, 48)
        for p, opt in zip((weight, kernel, plain), opts, strict=True):
            p.grad = grad.view(p.shape).clone()
            opt.step()
    assert opts[0].state[weight]["v_row"].shape == (2, 32)
    torch.testing.assert_close(weight.detach().view(2, 32, 48), kernel.detach(), rtol=0, atol=0)
    # Without the annotation the rows of both heads share one statistic: a different update.
    assert not torch.allclose(weight.detach(), plain.detach(), rtol=1e-4)
