"""Learning-rate schedules: big_vision's ``create_learning_rate_schedule`` as plain Python.

A schedule maps a step (0-based, the step about to be taken) to a multiplier of the base learning
rate. CLIPPO trains with ``rsqrt`` plus linear warm-up and linear cool-down: the rsqrt part does
not depend on ``total_steps``, so a run can be resumed from before its cool-down and trained for
longer by raising ``total_steps``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

DECAY_TYPES = ("rsqrt", "cosine", "linear", "polynomial", "stair")


def _percent_to_steps(name: str, steps: int, percent: float | None, total_steps: int) -> int:
    if percent is None:
        return steps
    if steps:
        raise ValueError(f"give only one of {name}_steps and {name}_percent")
    if not 0.0 <= percent <= 1.0:
        raise ValueError(f"{name}_percent must lie in [0, 1], got {percent}")
    # big_vision rounds to the nearest step, but never to 0 unless asked for exactly 0.
    return max(1, round(percent * total_steps)) if percent else 0


def create_schedule(
    total_steps: int,
    *,
    decay_type: str = "rsqrt",
    warmup_steps: int = 0,
    cooldown_steps: int = 0,
    warmup_percent: float | None = None,
    cooldown_percent: float | None = None,
    timescale: float = 10_000,
    shift: float = 0,
    linear_end: float = 0.0,
    end: float | None = None,
    power: float = 1.0,
    steps: Sequence[int] = (),
    mults: Sequence[float] = (),
    min_lr: float = 0.0,
) -> Callable[[int], float]:
    """Returns ``step -> multiplier`` equal to big_vision's schedule with ``base=1``.

    ``linear``/``polynomial`` decay to ``end`` (alias ``linear_end``) as ``(1 - progress)**power``;
    ``rsqrt`` is ``1/sqrt(1 + (step + shift - warmup) / timescale)``; ``stair`` multiplies by
    ``mults[i]`` from step ``steps[i]`` on. Warm-up and cool-down are linear and apply on top of
    every decay type. ``min_lr`` exists only so config files may carry it; big_vision has no
    such option, so any value other than 0 is refused.
    """
    if decay_type not in DECAY_TYPES:
        raise ValueError(f"unknown decay_type {decay_type!r}; valid: {', '.join(DECAY_TYPES)}")
    if min_lr:
        raise ValueError(
            f"min_lr={min_lr} is not a big_vision schedule option; use decay_type='linear' "
            "with linear_end for a floor"
        )
    warmup = _percent_to_steps("warmup", warmup_steps, warmup_percent, total_steps)
    cooldown = _percent_to_steps("cooldown", cooldown_steps, cooldown_percent, total_steps)
    if total_steps > 1 and warmup >= total_steps:
        raise ValueError(f"warmup ({warmup} steps) must be shorter than {total_steps=}")
    end = linear_end if end is None else end
    decay_span = total_steps - warmup
    stair_mults = [1.0, *mults]

    def schedule(step: int) -> float:
        progress = min(max((step - warmup) / decay_span, 0.0), 1.0) if decay_span else 1.0
        if decay_type in ("linear", "polynomial"):
            lr = end + (1.0 - end) * (1.0 - progress) ** power
        elif decay_type == "cosine":
            lr = 0.5 * (1.0 + math.cos(math.pi * progress))
        elif decay_type == "rsqrt":
            lr = 1.0 / math.sqrt(1.0 + (max(step, warmup) + shift - warmup) / timescale)
        else:  # stair
            lr = stair_mults[bisect.bisect_left(steps, step + 1)]
        if warmup:
            lr *= min(1.0, step / warmup)
        if cooldown:
            lr *= min(1.0, (total_steps - step) / cooldown)
        return lr

    return schedule
