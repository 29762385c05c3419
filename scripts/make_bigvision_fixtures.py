"""Writes tests/fixtures/bigvision: tiny big_vision models, their .npz checkpoints, and what
big_vision's own model code computes with them. ``tests/test_convert.py`` checks clippo against it.

It needs JAX, flax and a big_vision checkout, none of which clippo depends on:

    python3 -m venv /tmp/bv-venv
    /tmp/bv-venv/bin/pip install jax flax ml_collections numpy scipy absl-py einops
    mkdir -p /tmp/bv && git -C BIG_VISION_GIT archive HEAD | tar -x -C /tmp/bv
    /tmp/bv-venv/bin/python scripts/make_bigvision_fixtures.py --big-vision /tmp/bv \\
        --big-vision-commit "$(git -C BIG_VISION_GIT rev-parse HEAD)"

Text inputs are rendered with clippo's renderer (bit-exact with big_vision's render_unifont,
see tests/test_render.py), so the fixture pins the model, not the font. TensorFlow is not needed:
big_vision's model files only import ``tensorflow.io.gfile``, which is stubbed out below.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# Tiny shapes that still exercise every code path: several heads, two layers, a non-square
# MLP, a learned and a sin-cos posemb, all three pooling types, pre-logits on and off.
BACKBONE = dict(width=48, depth=2, mlp_dim=96, num_heads=3, patch_size=(8, 8))
CLIPPO = dict(
    image=dict(**BACKBONE, pool_type="map", head_zeroinit=False), out_dim=16, temperature_init=10.0
)
CLIPPO_RES = 64
VIT_TOK = dict(**BACKBONE, num_classes=10, pool_type="tok", rep_size=24, head_zeroinit=False)
VIT_TOK_RES = 32
VIT_GAP = dict(
    width=32,
    depth=2,
    mlp_dim=64,
    num_heads=4,
    patch_size=(16, 16),
    num_classes=7,
    pool_type="gap",
    posemb="sincos2d",
    head_zeroinit=False,
)
VIT_GAP_RES = 48
TEXTS = [
    "a photo of a cat",
    "Zürich ist die größte Stadt der Schweiz",
    "日本語のテキストも同じ画素で",
    "CLIPPO: Image-and-Language Understanding from Pixels Only",
]
RENDER = dict(font_size=16, lower=True, foreground=0, background=127)
# What the CLIPPO config passes to vit.load when initialising from an ImageNet-21k ViT, plus
# pre_logits, which this CLIPPO tower does not have.
DONT_LOAD = ["^head/.*", "^MAPHead_0/.*", "cls", "^pre_logits/.*"]


def import_big_vision(path: str):
    """Imports big_vision's model modules without TensorFlow."""
    import flax.training.checkpoints  # noqa: F401  (before the stub: flax probes for TF)

    tf = types.ModuleType("tensorflow")
    tf.io = types.ModuleType("tensorflow.io")
    tf.io.gfile = types.ModuleType("tensorflow.io.gfile")
    sys.modules.update({m.__name__: m for m in (tf, tf.io, tf.io.gfile)})
    sys.path.insert(0, path)
    from big_vision.models import vit
    from big_vision.models.proj.clippo import one_tower

    return vit, one_tower


def flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dict -> {"a/b/c": array}, the key layout big_vision's .npz checkpoints use."""
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}/"))
        else:
            flat[f"{prefix}{k}"] = np.asarray(v, np.float32)
    return flat


def perturbed(params, seed: int):
    """Adds noise to every parameter, so zero-initialised ones (biases, cls, LN) matter too."""
    import jax

    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda p: np.asarray(p, np.float32) + rng.normal(0, 0.05, p.shape).astype(np.float32),
        jax.device_get(params),
    )


def to_plain(tree):
    return {k: to_plain(v) for k, v in tree.items()} if hasattr(tree, "items") else tree


def value_range(pixels: np.ndarray) -> np.ndarray:
    """big_vision's ``value_range(-1, 1)`` on uint8 text images, in float32, as 3 channels."""
    x = pixels.astype(np.float32) / np.float32(255.0)
    x = np.float32(-1.0) + x * np.float32(2.0)
    return np.repeat(x[..., None], 3, axis=-1)


def assert_close(a, b, what: str) -> None:
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6, err_msg=what)


def make_clippo(vit, one_tower, out: Path) -> None:
    import jax
    import ml_collections

    sys.path.insert(0, str(ROOT / "src"))
    from clippo.render import UnifontRenderer

    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (3, CLIPPO_RES, CLIPPO_RES, 3)).astype(np.float32)
    pixels = UnifontRenderer(image_size=CLIPPO_RES, **RENDER)(TEXTS)
    texts = value_range(pixels)

    model = one_tower.Model(**CLIPPO)
    params = model.init(jax.random.PRNGKey(0), images[:1], texts[:1])["params"]
    params = perturbed(to_plain(params), seed=1)
    zimg, ztxt, res = model.apply({"params": params}, images, texts)

    # The scanned layout: same parameters stacked; big_vision's scan model must agree.
    scan_model = one_tower.Model(**{**CLIPPO, "image": {**CLIPPO["image"], "scan": True}})
    scan_init = scan_model.init(jax.random.PRNGKey(0), images[:1], texts[:1])["params"]
    scan_params = {**params, "img": vit.pyloop_to_scan(params["img"])}
    assert set(flatten(to_plain(scan_init))) == set(flatten(scan_params)), "scan layout differs"
    zimg_s, ztxt_s, _ = scan_model.apply({"params": scan_params}, images, texts)
    assert_close(zimg_s, zimg, "scan vs pyloop (images)")
    assert_close(ztxt_s, ztxt, "scan vs pyloop (texts)")

    # Released checkpoints keep the parameters under "params/"; write one layout each way.
    np.savez(out / "clippo_pyloop.npz", **flatten(params, "params/"))
    np.savez(out / "clippo_scan.npz", **flatten(scan_params))
    keep = ("encoded", "head_input", "pre_logits", "logits", "normalized")
    outputs = {
        f"{tower}/{k}": np.asarray(res[f"{tower}/{k}"]) for tower in ("img", "txt") for k in keep
    }
    np.savez(
        out / "clippo_outputs.npz",
        images=images,
        text_pixels=pixels,
        texts=np.array(TEXTS),
        zimg=np.asarray(zimg),
        ztxt=np.asarray(ztxt),
        t=np.asarray(res["t"]),
        **outputs,
    )

    # Initialising the CLIPPO image tower from the tok ViT, as the "I21k init" configs do.
    # The CLIPPO grid (8x8) differs from the ViT's (4x4), so vit.load resamples the posemb.
    cfg = ml_collections.ConfigDict({**CLIPPO, "image_model": "vit"})
    loaded = one_tower.load(
        params,
        {"img": str(out / "vit_tok_pyloop.npz")},
        cfg,
        img_load_kw={"dont_load": DONT_LOAD},
    )
    np.savez(out / "init_from_vit.npz", **flatten(to_plain(loaded["img"])))


def make_vit(vit, name: str, kw: dict, res: int, out: Path, seed: int) -> dict:
    import jax

    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (3, res, res, 3)).astype(np.float32)
    model = vit.Model(**kw)
    params = model.init(jax.random.PRNGKey(seed), images[:1])["params"]
    params = perturbed(to_plain(params), seed=seed + 1)
    _, res_out = model.apply({"params": params}, images)

    scan_model = vit.Model(**{**kw, "scan": True})
    scan_params = vit.pyloop_to_scan(params)
    scan_init = to_plain(scan_model.init(jax.random.PRNGKey(seed), images[:1])["params"])
    assert set(flatten(scan_init)) == set(flatten(scan_params)), "scan layout differs"
    _, scan_out = scan_model.apply({"params": scan_params}, images)
    assert_close(scan_out["logits"], res_out["logits"], f"{name}: scan vs pyloop")

    np.savez(out / f"{name}_pyloop.npz", **flatten(params))
    np.savez(out / f"{name}_scan.npz", **flatten(scan_params))
    keep = ("encoded", "head_input", "pre_logits", "logits")
    np.savez(
        out / f"{name}_outputs.npz", images=images, **{k: np.asarray(res_out[k]) for k in keep}
    )
    return params


def make_old_format(vit, params: dict, out: Path) -> None:
    """The tok ViT in the pre-2022 layout of the original ViT releases (e.g. the ImageNet-21k
    checkpoints the paper initialises from): pre-Linen module numbering, the posemb inside
    Transformer/posembed_input, and the [cls] token's posemb entry kept separately."""
    rng = np.random.default_rng(7)
    old = {k: v for k, v in params.items() if k != "Transformer"}
    renames = {
        "LayerNorm_0": "LayerNorm_0",
        "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
        "LayerNorm_1": "LayerNorm_2",
        "MlpBlock_0": "MlpBlock_3",
    }
    t = {}
    for name, sub in params["Transformer"].items():
        is_block = name.startswith("encoderblock")
        t[name] = {renames[k]: v for k, v in sub.items()} if is_block else sub
    pe_cls = rng.normal(0, 0.05, (1, 1, params["cls"].shape[-1])).astype(np.float32)
    t["posembed_input"] = {"pos_embedding": np.concatenate([pe_cls, params["pos_embedding"]], 1)}
    old["cls"] = params["cls"] - pe_cls
    del old["pos_embedding"]
    old["Transformer"] = t
    np.savez(out / "vit_tok_old.npz", **flatten(old))

    # big_vision's own loader must read it back to the same parameters.
    back = vit.load(params, str(out / "vit_tok_old.npz"), {})
    for k, v in flatten(params).items():
        assert_close(flatten(to_plain(back))[k], v, f"old layout: {k}")


def make_resample(vit, params: dict, out: Path) -> None:
    pe = np.asarray(params["pos_embedding"])
    width = pe.shape[-1]
    grids = {g: np.asarray(vit.resample_posemb(pe, np.zeros((1, g * g, width)))) for g in (3, 7)}
    np.savez(out / "resample_posemb.npz", posemb=pe, **{f"grid{g}": v for g, v in grids.items()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--big-vision", required=True, help="a big_vision checkout (source tree)")
    p.add_argument("--out", default=str(ROOT / "tests" / "fixtures" / "bigvision"))
    p.add_argument("--big-vision-commit", default="unknown", help="recorded in settings.json")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vit, one_tower = import_big_vision(args.big_vision)

    tok = make_vit(vit, "vit_tok", VIT_TOK, VIT_TOK_RES, out, seed=10)
    make_vit(vit, "vit_gap", VIT_GAP, VIT_GAP_RES, out, seed=20)
    make_old_format(vit, tok, out)
    make_resample(vit, tok, out)
    make_clippo(vit, one_tower, out)
    import flax
    import jax

    settings = dict(
        big_vision_commit=args.big_vision_commit,
        jax=jax.__version__,
        flax=flax.__version__,
        clippo=CLIPPO,
        clippo_res=CLIPPO_RES,
        vit_tok=VIT_TOK,
        vit_tok_res=VIT_TOK_RES,
        vit_gap=VIT_GAP,
        vit_gap_res=VIT_GAP_RES,
        render=RENDER,
        dont_load=DONT_LOAD,
    )
    (out / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    total = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {len(list(out.iterdir()))} files, {total / 1e6:.2f} MB, to {out}")


if __name__ == "__main__":
    main()
