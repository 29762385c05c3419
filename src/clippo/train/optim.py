"""Optimizers with big_vision's update rule: clip, Adafactor or Adam, lr, decoupled wd, schedule.

big_vision chains ``clip_by_global_norm -> optimizer -> scale(lr) -> add_decayed_weights(wd)
-> scale_by_schedule -> scale(-1)``, so one step is

    p <- p - schedule(step) * (lr * direction(clip(grad)) + wd * p)

Weight decay is scaled by the schedule but not by the learning rate. Each param group holds the
base ``lr``, its ``wd`` and ``mult``, the schedule multiplier that ``ScheduleMultiplier`` sets
before every step; ``group["lr"]`` is therefore the base rate, never the scheduled one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from clippo.train.distributed import full_like, is_sharded, local_tensor, shard_of

# Weight decay goes to "kernels" only, big_vision's ``.*/kernel$`` mask.
KERNEL_MODULES = (nn.Linear, nn.Conv2d)


def clip_grad_norm_(
    grads: list[torch.Tensor], max_norm: float | None, sharded: list[bool] | None = None
) -> torch.Tensor:
    """Scales ``grads`` in place to global norm ``max_norm`` as optax does; returns the prior norm.

    Unlike ``torch.nn.utils.clip_grad_norm_`` there is no epsilon: grads whose norm reaches
    ``max_norm`` become ``grad / norm * max_norm`` exactly, others are left alone. With
    ``max_norm`` None or 0 (big_vision's "no clipping") the norm is only measured.
    ``sharded[i]``: ``grads[i]`` is this process's shard of a gradient (FSDP); the squares of
    the shards are summed over processes, so the norm is the whole model's.
    """
    if not grads:
        return torch.zeros(())
    if sharded is None or not any(sharded):
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    else:
        squares = [g.float().square().sum() for g in grads]
        shard_sq = torch.stack([q for q, s in zip(squares, sharded, strict=True) if s]).sum()
        dist.all_reduce(shard_sq)
        whole = [q for q, s in zip(squares, sharded, strict=True) if not s]
        norm = (shard_sq + (torch.stack(whole).sum() if whole else 0.0)).sqrt()
    if max_norm:
        keep = norm < max_norm
        for g in grads:
            g.copy_(torch.where(keep, g, g / norm * max_norm))
    return norm


class _DecoupledOptimizer(torch.optim.Optimizer):
    """The big_vision chain around a per-parameter update direction supplied by a subclass."""

    def __init__(self, params, defaults: dict, grad_clip_norm: float | None):
        super().__init__(params, {**defaults, "mult": 1.0})
        self.grad_clip_norm = grad_clip_norm
        self.grad_norm = torch.zeros(())  # global gradient norm before clipping, last step

    def _direction(
        self, p: torch.Tensor, g: torch.Tensor, state: dict, group: dict
    ) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Clips all gradients by their global norm, then updates every parameter with a grad."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with_grad = [
            (p, group) for group in self.param_groups for p in group["params"] if p.grad is not None
        ]
        # Clip copies so that p.grad still holds what backward produced. Under FSDP a grad is
        # this process's shard; the update is computed on the shard (elementwise state) or on
        # the gathered whole (Adafactor's factored moments need whole rows and columns).
        grads = [local_tensor(p.grad).clone() for p, _ in with_grad]
        sharded = [is_sharded(p) for p, _ in with_grad]
        self.grad_norm = clip_grad_norm_(grads, self.grad_clip_norm, sharded)
        self._update(with_grad, grads)
        return loss

    def _update(self, with_grad: list, grads: list[torch.Tensor]) -> None:
        """``p <- p - mult * (lr * direction + wd * p)`` for each (param, group) and its grad."""
        for (p, group), g in zip(with_grad, grads, strict=True):
            if is_sharded(p):
                update = self._sharded_direction(p, g, self.state[p], group)
            else:
                update = self._direction(p, g, self.state[p], group)
            update.mul_(group["lr"])
            local = local_tensor(p)
            if group["wd"]:
                update.add_(local, alpha=group["wd"])
            local.sub_(update.mul_(group["mult"]))

    def _sharded_direction(self, p, g, state, group) -> torch.Tensor:
        # Elementwise rules (Adam) work on the shard alone.
        return self._direction(local_tensor(p), g, state, group)

    # State entries of the parameter's own shape: kept per shard under FSDP, whole in
    # checkpoints (``full_state_dict``).
    elementwise_state: tuple[str, ...] = ()

    def full_state_dict(self) -> dict:
        """``state_dict()`` with whole tensors for sharded parameters (a collective under FSDP:
        call it on every process); ``load_state_dict`` takes it under DDP or FSDP alike."""
        out = self.state_dict()
        params = [p for group in self.param_groups for p in group["params"]]
        for i, state in out["state"].items():
            if is_sharded(params[i]):
                state = out["state"][i] = dict(state)
                for k in self.elementwise_state:
                    if k in state:
                        state[k] = full_like(state[k], params[i])
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        """Loads like torch; whole-tensor entries of sharded parameters keep this shard."""
        super().load_state_dict(state_dict)
        for p, state in self.state.items():
            if is_sharded(p):
                for k in self.elementwise_state:
                    if k in state and state[k].shape == p.shape:
                        state[k] = shard_of(state[k], p).clone()


class Adafactor(_DecoupledOptimizer):
    """big_vision's Adafactor (``big_vision.scale_by_adafactor``) with its lr, wd and clipping.

    Second moments are factored over the two largest dims when the smaller of them has at least
    ``min_dim_size_to_factor`` entries; their decay is ``min(beta2_cap, 1 - t**-decay_rate)``
    with ``t = step - decay_offset + 1``. Momentum (no bias correction) is stored in
    ``momentum_dtype``. There is no parameter-scale multiplier and no relative step size.

    A parameter may carry ``adafactor_shape``, the shape its JAX counterpart has (a view of the
    same memory): flax's attention kernels are (width, heads, head_dim), so big_vision factors
    them per head, which a (width, width) ``nn.Linear`` weight alone would not.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        *,
        wd: float = 0.0,
        grad_clip_norm: float | None = None,
        min_dim_size_to_factor: int = 32,
        decay_rate: float = 0.8,
        decay_offset: int = 0,
        beta2_cap: float = 0.999,
        clipping_threshold: float | None = None,
        momentum: float | None = 0.9,
        momentum_dtype: torch.dtype = torch.bfloat16,
        eps: float = 1e-30,
    ):
        defaults = dict(
            lr=lr,
            wd=wd,
            min_dim_size_to_factor=min_dim_size_to_factor,
            decay_rate=decay_rate,
            decay_offset=decay_offset,
            beta2_cap=beta2_cap,
            clipping_threshold=clipping_threshold,
            momentum=momentum,
            eps=eps,
        )
        self.momentum_dtype = momentum_dtype
        super().__init__(params, defaults, grad_clip_norm)

    @staticmethod
    def factored_dims(shape: torch.Size, min_dim_size_to_factor: int) -> tuple[int, int] | None:
        """The (second largest, largest) dims to factor over, or None to keep a full moment."""
        if len(shape) < 2:
            return None
        order = sorted(range(len(shape)), key=lambda d: shape[d])
        if shape[order[-2]] < min_dim_size_to_factor:
            return None
        return order[-2], order[-1]

    elementwise_state = ("momentum",)

    def _direction(self, p, g, state, group):
        return self._with_momentum(self._preconditioned(p, g, state, group), state, group)

    def _sharded_direction(self, p, g, state, group):
        # The factored moments see the whole gradient (gathered); momentum stays per shard.
        update = self._preconditioned(p, full_like(g, p), state, group)
        return self._with_momentum(shard_of(update, p), state, group)

    def _preconditioned(self, p, g, state, group):
        """The second-moment-scaled (and RMS-clipped) update of the whole gradient ``g``."""
        shape = torch.Size(getattr(p, "adafactor_shape", p.shape))
        g = g.view(shape)
        dims = self.factored_dims(shape, group["min_dim_size_to_factor"])
        if "step" not in state:
            state["step"] = 0
            if dims is None:
                state["v"] = g.new_zeros(shape)
            else:
                state["v_row"] = g.new_zeros(shape[: dims[1]] + shape[dims[1] + 1 :])
                state["v_col"] = g.new_zeros(shape[: dims[0]] + shape[dims[0] + 1 :])
        t = state["step"] - group["decay_offset"] + 1.0
        beta2 = min(group["beta2_cap"], 1.0 - t ** -group["decay_rate"])
        state["step"] += 1
        g_sq = g * g + group["eps"]
        if dims is None:
            v = state["v"].mul_(beta2).add_(g_sq, alpha=1.0 - beta2)
            update = g * v.rsqrt()
        else:
            d1, d0 = dims  # v_row averages out the largest dim d0, v_col the other one
            v_row = state["v_row"].mul_(beta2).add_(g_sq.mean(dim=d0), alpha=1.0 - beta2)
            v_col = state["v_col"].mul_(beta2).add_(g_sq.mean(dim=d1), alpha=1.0 - beta2)
            row_mean = v_row.mean(dim=d1 - 1 if d1 > d0 else d1, keepdim=True)
            update = g * (v_row / row_mean).rsqrt().unsqueeze(d0) * v_col.rsqrt().unsqueeze(d1)
        update = update.view(p.shape)
        if group["clipping_threshold"]:
            rms = update.square().mean().sqrt()
            update = update / torch.clamp(rms / group["clipping_threshold"], min=1.0)
        return update

    def _with_momentum(self, update, state, group):
        if not group["momentum"]:
            return update
        if "momentum" not in state:
            state["momentum"] = torch.zeros_like(update, dtype=self.momentum_dtype)
        # optax multiplies the stored momentum by the decay as a weakly typed scalar, so in
        # the momentum's own dtype (0.9 -> 0.8984375 in bfloat16), and returns the float32
        # average before storing it rounded (to nearest even, as torch's cast also does).
        decay = torch.tensor(group["momentum"], dtype=self.momentum_dtype).item()
        m = state["momentum"].float().mul_(decay).add_(update, alpha=1.0 - group["momentum"])
        state["momentum"] = m.to(self.momentum_dtype, copy=True)  # update is scaled in place
        return m

    def load_state_dict(self, state_dict: dict) -> None:
        """Loads like torch, then restores the momentum dtype that torch casts to the param's."""
        super().load_state_dict(state_dict)
        for state in self.state.values():
            if "momentum" in state:
                state["momentum"] = state["momentum"].to(self.momentum_dtype)


class AdamW(_DecoupledOptimizer):
    """Adam (``optax.scale_by_adam``) inside the same chain as ``Adafactor``: interchangeable.

    ``foreach``: multi-tensor kernels (``torch._foreach_*``), one launch per operation for all
    parameters of a group instead of one per parameter. ``fused``: PyTorch's fused AdamW kernel
    (``torch._fused_adamw_``, CUDA and CPU), one launch for the whole update of a group. Both
    give the per-parameter loop's update, on whole tensors or on FSDP's shards alike.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        *,
        wd: float = 0.0,
        grad_clip_norm: float | None = None,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-8,
        eps_root: float = 0.0,
        foreach: bool = False,
        fused: bool = False,
    ):
        if fused and eps_root:
            raise ValueError(
                "fused=True has no eps_root (the kernel adds only eps, outside the square "
                f"root); got eps_root={eps_root}, need 0"
            )
        defaults = dict(lr=lr, wd=wd, b1=b1, b2=b2, eps=eps, eps_root=eps_root)
        super().__init__(params, defaults, grad_clip_norm)
        self.foreach, self.fused = foreach, fused

    elementwise_state = ("mu", "nu")

    def _update(self, with_grad: list, grads: list[torch.Tensor]) -> None:
        if not (self.foreach or self.fused):
            return super()._update(with_grad, grads)
        by_group: dict[int, tuple[dict, list, list]] = {}
        for (p, group), g in zip(with_grad, grads, strict=True):
            _, params, group_grads = by_group.setdefault(id(group), (group, [], []))
            params.append(p)
            group_grads.append(g)
        for group, ps, gs in by_group.values():
            states = [self.state[p] for p in ps]
            for st, g in zip(states, gs, strict=True):
                if not st:
                    st.update(step=0, mu=torch.zeros_like(g), nu=torch.zeros_like(g))
                st["step"] += 1
            # The elementwise update needs only this process's shard of each parameter (FSDP).
            local = [local_tensor(p) for p in ps]
            update = self._fused_update if self.fused else self._foreach_update
            update(group, local, gs, states)

    @staticmethod
    def _foreach_update(group: dict, ps: list, gs: list, states: list[dict]) -> None:
        b1, b2 = group["b1"], group["b2"]
        mus, nus = [st["mu"] for st in states], [st["nu"] for st in states]
        torch._foreach_mul_(mus, b1)
        torch._foreach_add_(mus, gs, alpha=1.0 - b1)
        torch._foreach_mul_(nus, b2)
        torch._foreach_add_(nus, torch._foreach_mul(gs, gs), alpha=1.0 - b2)
        mu_hat = torch._foreach_div(mus, [1.0 - b1 ** st["step"] for st in states])
        nu_hat = torch._foreach_div(nus, [1.0 - b2 ** st["step"] for st in states])
        torch._foreach_add_(nu_hat, group["eps_root"])
        torch._foreach_sqrt_(nu_hat)
        torch._foreach_add_(nu_hat, group["eps"])
        update = torch._foreach_div(mu_hat, nu_hat)
        torch._foreach_mul_(update, group["lr"])
        if group["wd"]:
            torch._foreach_add_(update, ps, alpha=group["wd"])
        torch._foreach_mul_(update, group["mult"])
        torch._foreach_sub_(ps, update)

    @staticmethod
    def _fused_update(group: dict, ps: list, gs: list, states: list[dict]) -> None:
        # The kernel's step is p <- p * (1 - lr * weight_decay) - lr * direction, so the
        # chain's p <- p - mult * (lr * direction + wd * p) is lr = mult * lr and weight_decay
        # = wd / lr; with a base lr of 0 (a frozen lr_mults group) the decay is one foreach op.
        lr, wd, mult = group["lr"], group["wd"], group["mult"]
        if wd and not lr:
            torch._foreach_mul_(ps, 1.0 - mult * wd)
        # Step counts as the kernel reads them: one float tensor per distinct count.
        counts: dict[int, torch.Tensor] = {}
        steps = [
            counts.setdefault(st["step"], torch.tensor(float(st["step"]), device=p.device))
            for st, p in zip(states, ps, strict=True)
        ]
        torch._fused_adamw_(
            ps,
            gs,
            [st["mu"] for st in states],
            [st["nu"] for st in states],
            [],
            steps,
            lr=mult * lr,
            beta1=group["b1"],
            beta2=group["b2"],
            weight_decay=wd / lr if lr else 0.0,
            eps=group["eps"],
            amsgrad=False,
            maximize=False,
        )

    def _direction(self, p, g, state, group):
        if not state:
            state.update(step=0, mu=torch.zeros_like(g), nu=torch.zeros_like(g))
        b1, b2 = group["b1"], group["b2"]
        state["step"] += 1
        mu = state["mu"].mul_(b1).add_(g, alpha=1.0 - b1)
        nu = state["nu"].mul_(b2).add_(g * g, alpha=1.0 - b2)
        mu_hat = mu / (1.0 - b1 ** state["step"])
        nu_hat = nu / (1.0 - b2 ** state["step"])
        return mu_hat / ((nu_hat + group["eps_root"]).sqrt() + group["eps"])


class SGD(_DecoupledOptimizer):
    """SGD with heavy-ball momentum (``optax.trace``, big_vision's ``momentum_hp``) inside the
    same chain: the direction is ``m <- momentum * m + grad`` (the fine-tuning optimizer of
    CLIPPO's VQA and big_vision's transfer configs)."""

    def __init__(
        self,
        params: Iterable,
        lr: float,
        *,
        wd: float = 0.0,
        grad_clip_norm: float | None = None,
        momentum: float = 0.9,
        nesterov: bool = False,
    ):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        defaults = dict(lr=lr, wd=wd, momentum=momentum, nesterov=nesterov)
        super().__init__(params, defaults, grad_clip_norm)

    def _direction(self, p, g, state, group):
        if not group["momentum"]:
            return g.clone()
        if not state:
            state["trace"] = torch.zeros_like(p)
        trace = state["trace"].mul_(group["momentum"]).add_(g)
        if group["nesterov"]:
            return g + group["momentum"] * trace
        return trace.clone()  # the caller scales the direction in place


OPTIMIZERS = {"adafactor": Adafactor, "adamw": AdamW, "sgd": SGD}


class ScheduleMultiplier:
    """Sets each param group's ``mult`` to ``schedule(step)``; call ``step()`` after each update."""

    def __init__(self, optimizer: _DecoupledOptimizer, schedule: Callable[[int], float]):
        self.optimizer = optimizer
        self.schedule = schedule
        self.last_step = 0
        self._apply()

    def _apply(self) -> None:
        mult = self.schedule(self.last_step)
        for group in self.optimizer.param_groups:
            group["mult"] = mult

    def step(self) -> None:
        """Advances to the next training step."""
        self.last_step += 1
        self._apply()

    def state_dict(self) -> dict:
        """The step count (the schedule itself is code, rebuilt from the config)."""
        return {"last_step": self.last_step}

    def load_state_dict(self, state_dict: dict) -> None:
        """Resumes at the saved step."""
        self.last_step = state_dict["last_step"]
        self._apply()


def param_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Splits trainable parameters into (kernels, the rest): weights of Linear and Conv2d decay."""
    kernel_ids = {id(m.weight) for m in model.modules() if isinstance(m, KERNEL_MODULES)}
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if id(p) in kernel_ids else no_decay).append(p)
    return decay, no_decay


def _split_by_lr_mult(
    model: nn.Module, groups: list[dict], lr_mults: Mapping[str, float], lr: float
) -> list[dict]:
    """Each group split by the learning-rate multiplier of its parameters' names."""
    patterns = []
    for pattern, mult in lr_mults.items():
        try:
            patterns.append((re.compile(pattern), float(mult)))
        except re.error as e:
            raise ValueError(f"lr_mults: {pattern!r} is not a regular expression ({e})") from None
    names = {id(p): n for n, p in model.named_parameters()}
    matched: set[str] = set()

    def mult_of(p: nn.Parameter) -> float:
        for regex, mult in patterns:
            if regex.fullmatch(names[id(p)]):
                matched.add(regex.pattern)
                return mult
        return 1.0

    out = []
    for group in groups:
        by_mult: dict[float, list[nn.Parameter]] = {}
        for p in group["params"]:
            by_mult.setdefault(mult_of(p), []).append(p)
        for mult, params in by_mult.items():
            out.append({**group, "params": params, "lr": lr * mult})
    unused = [pattern for pattern in lr_mults if pattern not in matched]
    if unused:
        raise ValueError(
            f"lr_mults: {unused} match no trainable parameter (names such as "
            f"{sorted(names.values())[:3]})"
        )
    return out


def build_optimizer(
    model: nn.Module,
    *,
    name: str = "adafactor",
    lr: float,
    wd: float,
    schedule: Callable[[int], float],
    grad_clip_norm: float | None = 1.0,
    lr_mults: Mapping[str, float] | None = None,
    **opt_kwargs,
) -> tuple[_DecoupledOptimizer, ScheduleMultiplier]:
    """Builds big_vision's optimizer chain over the trainable params of ``model``.

    Frozen params (``requires_grad=False``) are left out. ``lr_mults`` maps regular expressions
    to learning-rate multipliers for the parameters whose names they match in full (the first
    that matches wins; big_vision's ``lr_mults``), e.g. ``{"head\\..*": 10}`` for a fresh head.
    ``optimizer.step()`` clips the gradients by global norm itself and keeps the pre-clip norm
    in ``optimizer.grad_norm``; call ``scheduler.step()`` after it.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    decay, no_decay = param_groups(model)
    groups = [{"params": ps, "wd": w} for ps, w in ((decay, wd), (no_decay, 0.0)) if ps]
    if lr_mults:
        groups = _split_by_lr_mult(model, groups, lr_mults, lr)
    optimizer = OPTIMIZERS[name](groups, lr, wd=wd, grad_clip_norm=grad_clip_norm, **opt_kwargs)
    return optimizer, ScheduleMultiplier(optimizer, schedule)


def optimizer_from_config(
    model: nn.Module, optim: Any, schedule: Callable[[int], float]
) -> tuple[_DecoupledOptimizer, ScheduleMultiplier]:
    """``build_optimizer`` as a config's ``optim`` section (a ``clippo.train.config.OptimConfig``,
    not imported: config imports this module) sets it: what training runs."""
    return build_optimizer(
        model,
        name=optim.name,
        lr=optim.lr,
        wd=optim.wd * optim.lr if optim.wd_times_lr else optim.wd,
        schedule=schedule,
        grad_clip_norm=optim.grad_clip_norm,
        lr_mults=optim.lr_mults,
        **optim.kwargs,
    )
