"""Records big_vision's schedules and optimizer trajectories as golden data for tests/test_optim*.

Runs big_vision's own ``utils.create_learning_rate_schedule`` and ``optax.make`` (extracted from
a big_vision git checkout at run time, never copied into this repository) in a scratch venv with
jax, optax, flax, ml_collections and absl-py installed:

    python3 -m venv /tmp/optim-helper/venv
    /tmp/optim-helper/venv/bin/pip install jax optax flax ml_collections numpy absl-py einops
    /tmp/optim-helper/venv/bin/python scripts/make_optim_fixtures.py \
        /work/.mirror/google-research+big_vision/repo

Writes tests/fixtures/optim/{schedules,inputs,adafactor,adamw}.npz.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "optim"

# (name, total_steps, kwargs): every decay type big_vision knows, with warm-up and cool-down.
SCHEDULE_CASES = [
    (
        "rsqrt_clippo",
        1000,
        dict(decay_type="rsqrt", timescale=50, warmup_steps=100, cooldown_steps=100),
    ),
    ("rsqrt_shift", 1000, dict(decay_type="rsqrt", timescale=200, shift=30, warmup_steps=10)),
    ("rsqrt_plain", 1000, dict(decay_type="rsqrt")),
    ("cosine", 1000, dict(decay_type="cosine", warmup_steps=50)),
    ("cosine_cooldown", 1000, dict(decay_type="cosine", warmup_steps=50, cooldown_steps=200)),
    ("cosine_percent", 1000, dict(decay_type="cosine", warmup_percent=0.05, cooldown_percent=0.1)),
    ("linear_end", 1000, dict(decay_type="linear", warmup_steps=20, linear_end=0.1)),
    ("polynomial", 1000, dict(decay_type="polynomial", power=2, end=0.01)),
    ("stair", 1000, dict(decay_type="stair", steps=[300, 600], mults=[0.1, 0.01], warmup_steps=10)),
    ("one_step", 1, dict(decay_type="cosine")),
]

# Parameter shapes are given in PyTorch layout (Linear: out x in, Conv2d: out x in x kh x kw).
# Adafactor only looks at dimension sizes, so the layout does not change the maths as long as
# no two of the largest dimensions tie. Names ending in /kernel get weight decay.
PARAM_SHAPES = {
    "dense/kernel": (33, 32),  # factored (both dims >= 32)
    "dense/bias": (33,),
    "conv/kernel": (34, 32, 2, 1),  # 4-D, factored over its two largest dims
    "head/kernel": (6, 4),  # too small to factor
    "t": (1,),
}
# Per-step gradient scales: the global norm of the unit-normal gradients is ~57, so some steps
# are clipped at 1.0 and some are not.
GRAD_SCALES = [0.05, 0.01, 0.1, 0.005, 1.0, 0.012, 0.02, 0.003]
TRAJ = dict(
    lr=0.01,
    wd=0.05,
    total_steps=len(GRAD_SCALES),
    schedule=dict(decay_type="rsqrt", timescale=4, warmup_steps=3, cooldown_steps=3),
)


def import_big_vision(repo: str, tmp: Path):
    """Extracts big_vision/{utils,optax,pp/registry}.py and imports them with light stubs."""
    pkg = tmp / "big_vision"
    (pkg / "pp").mkdir(parents=True)
    for rel in ["utils.py", "optax.py", "pp/registry.py"]:
        text = subprocess.run(
            ["git", "-C", repo, "show", f"HEAD:big_vision/{rel}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        (pkg / rel).write_text(text)
    (pkg / "__init__.py").write_text("")
    (pkg / "pp" / "__init__.py").write_text("")
    # utils.py imports tensorflow only for gfile, which none of the recorded functions use.
    tf = types.ModuleType("tensorflow")
    tf.io = types.ModuleType("tensorflow.io")
    tf.io.gfile = types.ModuleType("tensorflow.io.gfile")
    sys.modules.update(
        {"tensorflow": tf, "tensorflow.io": tf.io, "tensorflow.io.gfile": tf.io.gfile}
    )
    sys.path.insert(0, str(tmp))
    import big_vision.optax as bv_optax
    import big_vision.utils as bv_utils

    return bv_utils, bv_optax


def record_schedules(bv_utils) -> dict:
    out = {"cases": np.array(json.dumps([[n, t, kw] for n, t, kw in SCHEDULE_CASES]))}
    for name, total, kw in SCHEDULE_CASES:
        fn = bv_utils.create_learning_rate_schedule(total_steps=total, base=1.0, **kw)
        out[name] = np.array([float(fn(s)) for s in range(total + 1)], np.float32)
    return out


def unflatten(flat: dict) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}/"))
        else:
            flat[prefix + k] = np.asarray(v, np.float32)
    return flat


def record_trajectory(bv_optax, optax_name: str, params0: dict, grads: list, per_step: bool):
    import jax
    import ml_collections
    import optax

    config = ml_collections.ConfigDict(
        dict(
            optax_name=optax_name,
            grad_clip_norm=1.0,
            lr=TRAJ["lr"],
            wd=TRAJ["wd"],
            schedule=TRAJ["schedule"],
        )
    )
    params = jax.tree.map(jax.numpy.asarray, unflatten(params0))
    tx, _ = bv_optax.make(config, params, sched_kw=dict(total_steps=TRAJ["total_steps"]))
    state = tx.init(params)

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    out = {}
    for k, g in enumerate(grads):
        params, state = step(params, state, unflatten(g))
        if per_step or k == len(grads) - 1:
            out.update({f"param{k + 1}/{n}": v for n, v in flatten(params).items()})
        if per_step:
            # The Adafactor state the next step starts from: second moments and momentum.
            (rms,) = bv_optax.find_states(state, optax.FactoredState)
            (ema,) = bv_optax.find_states(state, optax.EmaState)
            for field in ("v_row", "v_col", "v"):
                out.update(
                    {f"{field}{k + 1}/{n}": v for n, v in flatten(getattr(rms, field)).items()}
                )
            out.update({f"m{k + 1}/{n}": v for n, v in flatten(ema.ema).items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("big_vision_repo", help="path to a big_vision git checkout (bare is fine)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        bv_utils, bv_optax = import_big_vision(args.big_vision_repo, Path(tmp))
        np.savez_compressed(OUT / "schedules.npz", **record_schedules(bv_utils))

        rng = np.random.default_rng(0)
        params0 = {n: rng.normal(size=s).astype(np.float32) for n, s in PARAM_SHAPES.items()}
        grads = [
            {n: (scale * rng.normal(size=s)).astype(np.float32) for n, s in PARAM_SHAPES.items()}
            for scale in GRAD_SCALES
        ]
        common = {"config": np.array(json.dumps(TRAJ))}
        common.update({f"param0/{n}": v for n, v in params0.items()})
        for k, g in enumerate(grads):
            common.update({f"grad{k}/{n}": v for n, v in g.items()})
        for name, optax_name, per_step in [
            ("adafactor", "big_vision.scale_by_adafactor", True),
            ("adamw", "scale_by_adam", False),
        ]:
            traj = record_trajectory(bv_optax, optax_name, params0, grads, per_step)
            np.savez_compressed(OUT / f"{name}.npz", **traj)
        np.savez_compressed(OUT / "inputs.npz", **common)
    for f in sorted(OUT.glob("*.npz")):
        print(f"{f.relative_to(OUT.parents[2])}: {f.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
