"""Learning-rate schedules against big_vision's create_learning_rate_schedule."""

import json
from pathlib import Path

import numpy as np
import pytest

from clippo.train.schedules import create_schedule

GOLDEN = np.load(Path(__file__).parent / "fixtures" / "optim" / "schedules.npz")
CASES = json.loads(str(GOLDEN["cases"]))


@pytest.mark.parametrize("name,total_steps,kwargs", CASES, ids=[c[0] for c in CASES])
def test_schedule_matches_big_vision(name, total_steps, kwargs):
    schedule = create_schedule(total_steps, **kwargs)
    ours = np.array([schedule(s) for s in range(total_steps + 1)])
    # The reference is float32, so agreement is to float32 rounding.
    np.testing.assert_allclose(ours, GOLDEN[name], rtol=1e-6, atol=1e-7)


def test_rsqrt_warmup_and_cooldown_shape():
    schedule = create_schedule(
        1000, decay_type="rsqrt", timescale=100, warmup_steps=100, cooldown_steps=100
    )
    assert schedule(0) == 0.0
    assert schedule(50) == pytest.approx(0.5)
    assert schedule(100) == 1.0
    assert schedule(500) == pytest.approx(1 / np.sqrt(5))
    assert schedule(950) == pytest.approx(0.5 / np.sqrt(9.5))
    assert schedule(1000) == 0.0


def test_rsqrt_run_can_be_extended_before_cooldown():
    short = create_schedule(1000, decay_type="rsqrt", warmup_steps=100, cooldown_steps=100)
    long = create_schedule(5000, decay_type="rsqrt", warmup_steps=100, cooldown_steps=100)
    assert [short(s) for s in range(900)] == [long(s) for s in range(900)]
    assert short(950) < long(950)


def test_unknown_decay_type_names_it_and_lists_valid_ones():
    with pytest.raises(ValueError, match=r"'exp'.*rsqrt, cosine, linear, polynomial, stair"):
        create_schedule(100, decay_type="exp")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(warmup_steps=100), "warmup"),
        (dict(warmup_steps=5, warmup_percent=0.1), "only one of warmup_steps"),
        (dict(cooldown_percent=1.5), "cooldown_percent"),
        (dict(min_lr=1e-5), "min_lr"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_schedule(100, decay_type="cosine", **kwargs)


def test_config_keys_with_neutral_values_are_accepted():
    # The loop passes every ScheduleConfig field, whatever the decay type.
    schedule = create_schedule(
        10,
        decay_type="cosine",
        warmup_steps=0,
        cooldown_steps=0,
        timescale=10_000,
        linear_end=0.0,
        min_lr=0.0,
        power=1.0,
    )
    assert schedule(0) == 1.0 and schedule(10) == 0.0
