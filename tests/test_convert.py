"""big_vision checkpoints <-> clippo: converted models compute what big_vision's own code computed.

The fixtures (tests/fixtures/bigvision, written by scripts/make_bigvision_fixtures.py with
big_vision's JAX model code) hold tiny random CLIPPO and ViT checkpoints in both layouts and
big_vision's outputs for fixed inputs.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import clippo
from clippo.cli import main
from clippo.convert import (
    CLIPPO_DONT_LOAD,
    RELEASED_RENDER,
    big_vision_params,
    from_big_vision,
    load_big_vision_vit_into,
    read_big_vision_npz,
    resample_posemb,
    to_big_vision,
    variant_name,
)
from clippo.factory import create_model
from clippo.models import CLIPPO, ViT, ViTConfig, from_pretrained, save_pretrained
from clippo.models.clippo import text_pixels_to_input
from clippo.render import UnifontRenderer

FIXTURES = Path(__file__).parent / "fixtures" / "bigvision"
SETTINGS = json.loads((FIXTURES / "settings.json").read_text())
TOL = 1e-5  # max |clippo - big_vision| / max |big_vision|, float32
LAYOUTS = ("pyloop", "scan")
FEATURES = ("encoded", "head_input", "pre_logits", "logits")


def rel_err(ours, theirs) -> float:
    ours = ours.detach().numpy() if isinstance(ours, torch.Tensor) else ours
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def nhwc(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def npz(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / name) as data:
        return {k: data[k] for k in data.files}


def test_fixtures_are_nontrivial():
    # Outputs that differ across inputs and parameters far from init: a wrong mapping shows.
    out = npz("clippo_outputs.npz")
    assert np.abs(out["zimg"][0] - out["zimg"][1]).max() > 0.1
    assert np.abs(out["ztxt"][0] - out["ztxt"][1]).max() > 0.1
    assert all(np.abs(v).min() > 0 for k, v in npz("clippo_scan.npz").items() if "bias" in k)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_clippo_matches_big_vision(layout):
    model = from_big_vision(FIXTURES / f"clippo_{layout}.npz")
    out = npz("clippo_outputs.npz")
    want = SETTINGS["clippo"]
    cfg = model.image.cfg
    assert isinstance(model, CLIPPO) and model.cfg.out_dim == want["out_dim"]
    assert (cfg.width, cfg.depth, cfg.mlp_dim, cfg.num_heads, cfg.pool_type) == (
        *(want["image"][k] for k in ("width", "depth", "mlp_dim", "num_heads", "pool_type")),
    )
    assert (cfg.patch_size, cfg.image_size) == (8, SETTINGS["clippo_res"])

    texts = [str(t) for t in out["texts"]]
    with torch.no_grad():
        images = nhwc(out["images"])
        img = model.image.forward_features(images)
        txt = model.image.forward_features(
            text_pixels_to_input(torch.from_numpy(out["text_pixels"]))
        )
        errors = {f"img/{k}": rel_err(img[k], out[f"img/{k}"]) for k in FEATURES}
        errors |= {f"txt/{k}": rel_err(txt[k], out[f"txt/{k}"]) for k in FEATURES}
        errors["zimg"] = rel_err(model.encode_image(images), out["zimg"])
        errors["img/normalized"] = rel_err(model.encode_image(images), out["img/normalized"])
        # End to end: strings -> clippo's renderer -> the converted ViT.
        np.testing.assert_array_equal(model.preprocess_text(texts).numpy(), out["text_pixels"])
        errors["ztxt"] = rel_err(model.encode_text(texts), out["ztxt"])
        errors["txt/normalized"] = rel_err(model.encode_text(texts), out["txt/normalized"])
        errors["t"] = rel_err(model.logit_scale.exp(), out["t"])
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["vit_tok", "vit_gap"])
def test_vit_classifier_matches_big_vision(name, layout):
    res = SETTINGS[f"{name}_res"]
    # A sin-cos posemb is not stored, so the file cannot tell the resolution: pass it.
    image_size = res if SETTINGS[name].get("posemb") == "sincos2d" else None
    model = from_big_vision(FIXTURES / f"{name}_{layout}.npz", image_size=image_size)
    want = SETTINGS[name]
    cfg = model.cfg
    assert isinstance(model, ViT) and cfg.image_size == res
    assert (cfg.width, cfg.depth, cfg.mlp_dim, cfg.num_heads, cfg.patch_size) == (
        *(want[k] for k in ("width", "depth", "mlp_dim", "num_heads")),
        want["patch_size"][0],
    )
    assert (cfg.pool_type, cfg.num_classes, cfg.rep_size) == (
        want["pool_type"],
        want["num_classes"],
        want.get("rep_size", 0),
    )
    assert cfg.posemb == want.get("posemb", "learn")
    out = npz(f"{name}_outputs.npz")
    with torch.no_grad():
        feats = model.forward_features(nhwc(out["images"]))
    errors = {k: rel_err(feats[k], out[k]) for k in FEATURES}
    assert max(errors.values()) < TOL, errors


def test_old_vit_release_layout_matches_big_vision():
    # Pre-Linen numbering, posemb in Transformer/posembed_input, [cls] with its own posemb.
    model = from_big_vision(FIXTURES / "vit_tok_old.npz")
    out = npz("vit_tok_outputs.npz")
    with torch.no_grad():
        feats = model.forward_features(nhwc(out["images"]))
    errors = {k: rel_err(feats[k], out[k]) for k in FEATURES}
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("grid", [3, 7])
def test_resample_posemb_matches_big_vision(grid):
    ref = npz("resample_posemb.npz")
    ours = resample_posemb(ref["posemb"], grid)
    assert ours.dtype == np.float32
    assert rel_err(ours, ref[f"grid{grid}"]) < TOL
    tensor = resample_posemb(torch.from_numpy(ref["posemb"]), grid)
    assert isinstance(tensor, torch.Tensor) and rel_err(tensor, ref[f"grid{grid}"]) < TOL
    # Converting at another resolution resamples the same way.
    model = from_big_vision(FIXTURES / "vit_tok_scan.npz", image_size=8 * grid)
    assert model.cfg.grid == grid
    assert rel_err(model.pos_embed, ref[f"grid{grid}"]) < TOL


def test_resample_posemb_rejects_non_grid():
    with pytest.raises(ValueError, match="not a square|expected a position embedding"):
        resample_posemb(np.zeros((1, 15, 4), np.float32), 3)


@pytest.mark.parametrize("source", ["vit_tok_pyloop", "vit_tok_scan", "vit_tok_old"])
def test_init_from_vit_matches_big_vision_model_load(source):
    # big_vision: one_tower.load(params, {"img": vit.npz}, img_load_kw={"dont_load": ...}),
    # which keeps CLIPPO's own head / MAP head and resamples the 4x4 posemb to 8x8.
    model = from_big_vision(FIXTURES / "clippo_pyloop.npz")
    before = big_vision_params(model)
    taken = load_big_vision_vit_into(model, FIXTURES / f"{source}.npz", SETTINGS["dont_load"])
    assert "pos_embedding" in taken and not any(k.startswith(("head", "MAPHead")) for k in taken)
    ours = {k.removeprefix("img/"): v for k, v in big_vision_params(model).items() if k != "t"}
    ref = npz("init_from_vit.npz")
    assert set(ours) == set(ref)
    for k in ref:
        if k == "pos_embedding":
            assert rel_err(ours[k], ref[k]) < TOL
        else:
            np.testing.assert_array_equal(ours[k], ref[k], err_msg=k)
    np.testing.assert_array_equal(ours["head/kernel"], before["img/head/kernel"])
    assert not np.array_equal(ours["embedding/kernel"], before["img/embedding/kernel"])


def test_init_from_vit_names_first_unskipped_mismatch():
    model = from_big_vision(FIXTURES / "clippo_pyloop.npz")
    with pytest.raises(ValueError, match=r"'MAPHead_0/LayerNorm_0/bias' is missing from the file"):
        load_big_vision_vit_into(model, FIXTURES / "vit_tok_pyloop.npz", CLIPPO_DONT_LOAD[:1])
    with pytest.raises(ValueError, match=r"'cls' is not in the model"):
        load_big_vision_vit_into(model, FIXTURES / "vit_tok_pyloop.npz", ["^head/.*", "^MAP.*"])
    with pytest.raises(ValueError, match="never start with '/'"):
        load_big_vision_vit_into(model, FIXTURES / "vit_tok_pyloop.npz", ["/head/.*"])


def test_init_from_i21k_style_vit_into_fresh_clippo():
    # The paper's "I21k init": a fresh model, big_vision's CLIPPO dont_load list.
    sizes = dict(width=48, depth=2, mlp_dim=96, num_heads=3)
    model = create_model("clippo-mu/8", **sizes, image_size=64, out_dim=16)
    vit = read_big_vision_npz(FIXTURES / "vit_tok_pyloop.npz")
    load_big_vision_vit_into(model, FIXTURES / "vit_tok_pyloop.npz", [*CLIPPO_DONT_LOAD, "^pre_.*"])
    block = "Transformer/encoderblock_1/MlpBlock_0/Dense_0/kernel"
    np.testing.assert_array_equal(big_vision_params(model)[f"img/{block}"], vit[block])


@pytest.mark.parametrize(
    "name", ["clippo_pyloop", "clippo_scan", "vit_tok_pyloop", "vit_tok_scan", "vit_gap_scan"]
)
def test_round_trip_is_bit_exact(name, tmp_path):
    src = read_big_vision_npz(FIXTURES / f"{name}.npz")
    image_size = 48 if name.startswith("vit_gap") else None
    save_pretrained(from_big_vision(FIXTURES / f"{name}.npz", image_size=image_size), tmp_path)
    back = to_big_vision(from_pretrained(tmp_path), tmp_path / "back.npz", scan="scan" in name)
    back = read_big_vision_npz(back)
    assert set(back) == set(src)
    for k, v in src.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_bfloat16_checkpoints_are_read_exactly(tmp_path):
    flat = read_big_vision_npz(FIXTURES / "vit_tok_scan.npz")
    bf16 = {k: torch.from_numpy(v).bfloat16() for k, v in flat.items()}
    # numpy has no bfloat16: big_vision's bf16 arrays land in .npz files as 2-byte voids.
    voids = {k: t.view(torch.int16).numpy().view("V2") for k, t in bf16.items()}
    np.savez(tmp_path / "bf16.npz", **voids)
    back = read_big_vision_npz(tmp_path / "bf16.npz")
    for k, t in bf16.items():
        np.testing.assert_array_equal(back[k], t.float().numpy(), err_msg=k)
    assert isinstance(from_big_vision(tmp_path / "bf16.npz"), ViT)


def _write_without(tmp_path: Path, name: str, drop: str = "", add: str = "") -> Path:
    with np.load(FIXTURES / name) as data:
        flat = {k: data[k] for k in data.files if k != drop}
    if add:
        flat[add] = np.zeros(3, np.float32)
    path = tmp_path / f"edited_{name}"
    np.savez(path, **flat)
    return path


@pytest.mark.parametrize(
    "name, drop, add, message",
    [
        (
            "clippo_scan.npz",
            "img/Transformer/encoderblock/MlpBlock_0/Dense_1/bias",
            "",
            "missing key 'img/Transformer/encoderblock/MlpBlock_0/Dense_1/bias'",
        ),
        ("clippo_pyloop.npz", "params/t", "", "missing key 'params/t'"),
        (
            "clippo_pyloop.npz",
            "",
            "params/img/MAPHead_0/extra",
            "unexpected key 'params/img/MAPHead_0/extra'",
        ),
        ("clippo_scan.npz", "", "txt/head/bias", "unexpected key 'txt/head/bias'"),
        ("vit_tok_pyloop.npz", "head/bias", "", "missing key 'head/bias'"),
        ("vit_gap_scan.npz", "", "Transformer/zzz", "unexpected key 'Transformer/zzz'"),
        (
            "vit_tok_scan.npz",
            "",
            "Transformer/encoderblock_0/LayerNorm_0/bias",
            "unexpected key 'Transformer/encoderblock_0/LayerNorm_0/bias'",
        ),
    ],
)
def test_error_names_first_missing_or_unexpected_key(tmp_path, name, drop, add, message):
    path = _write_without(tmp_path, name, drop, add)
    with pytest.raises(ValueError, match=f"^{re.escape(f'{path}: {message}')}"):
        from_big_vision(path)


def test_variant_is_inferred_from_arrays(tmp_path):
    # Width, depth, MLP size and heads of big_vision's "mu" variant are recognised by name.
    model = create_model("clippo-mu/16", image_size=32, out_dim=8)
    to_big_vision(model, tmp_path / "mu.npz")
    cfg = from_big_vision(tmp_path / "mu.npz").image.cfg
    assert variant_name(cfg) == "mu/16" and cfg.image_size == 32 and cfg.pool_type == "map"
    assert variant_name(ViTConfig(width=48, depth=2, mlp_dim=96, num_heads=3)) is None


def test_cli_converts_both_ways_with_unifont_files(tmp_path, capsys):
    # A stand-in .hex file (the real 9.0.06 ones are a user download): 'a' as a solid block.
    hex_file = tmp_path / "unifont-test.hex"
    hex_file.write_text("0061:" + "FF" * 16 + "\n")
    out_dir = tmp_path / "model"
    ckpt = FIXTURES / "clippo_scan.npz"
    assert (
        main(["convert", "bigvision", str(ckpt), str(out_dir), "--unifont-hex", str(hex_file)]) == 0
    )
    assert "CLIPPO (out_dim 16)" in capsys.readouterr().out

    config = json.loads((out_dir / "config.json").read_text())
    want = {**RELEASED_RENDER, "image_size": 64, "hex_files": [str(hex_file.resolve())]}
    assert config["render"] == want
    model = clippo.from_pretrained(out_dir)
    assert model.renderer == UnifontRenderer(**want)
    pixels = model.preprocess_text(["aaa"])[0].numpy()
    assert (pixels == 0).sum() == 3 * 8 * 16  # three solid 8x16 glyphs from the file

    npz_path = tmp_path / "back.npz"
    assert main(["convert", "to-bigvision", str(out_dir), str(npz_path), "--scan"]) == 0
    assert "scanned layout" in capsys.readouterr().out
    src, back = read_big_vision_npz(ckpt), read_big_vision_npz(npz_path)
    assert set(src) == set(back)
    assert all(np.array_equal(src[k], back[k]) for k in src)


def test_cli_default_renderer_and_vit_directory(tmp_path, capsys):
    assert (
        main(["convert", "bigvision", str(FIXTURES / "clippo_pyloop.npz"), str(tmp_path / "c")])
        == 0
    )
    assert "9.0.06" in capsys.readouterr().out
    render = json.loads((tmp_path / "c" / "config.json").read_text())["render"]
    assert render == {**RELEASED_RENDER, "image_size": 64}

    vit_dir = tmp_path / "vit"
    args = [str(FIXTURES / "vit_gap_pyloop.npz"), str(vit_dir), "--image-size", "48"]
    assert main(["convert", "bigvision", *args]) == 0
    assert "ViT" in capsys.readouterr().out
    model = from_pretrained(vit_dir)
    assert isinstance(model, ViT) and model.cfg.image_size == 48
    assert main(["convert", "to-bigvision", str(vit_dir), str(tmp_path / "vit.npz")]) == 0
    src, back = npz("vit_gap_pyloop.npz"), read_big_vision_npz(tmp_path / "vit.npz")
    assert set(src) == set(back) and all(np.array_equal(src[k], back[k]) for k in src)


def test_cli_reports_bad_checkpoint(tmp_path, capsys):
    path = _write_without(tmp_path, "clippo_scan.npz", drop="img/MAPHead_0/probe")
    assert main(["convert", "bigvision", str(path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "missing key 'img/MAPHead_0/probe'" in err
    assert not (tmp_path / "out").exists()


def test_to_bigvision_refuses_other_models_and_never_damages_the_output(tmp_path, capsys):
    out = tmp_path / "good.npz"
    to_big_vision(create_model("clippo-mu/16", image_size=32, out_dim=8), out)
    before = out.read_bytes()
    clip = create_model("clip-mu/16", image_size=32, vocab_size=50)
    with pytest.raises(ValueError, match="holds a CLIPPO one-tower model or a ViT; got CLIP"):
        to_big_vision(clip, out)
    untied = create_model("clippo-untied-mu/16", image_size=32, out_dim=8)
    with pytest.raises(ValueError, match="shares all weights"):
        to_big_vision(untied, out)
    assert out.read_bytes() == before  # a failed conversion leaves the old file whole
    save_pretrained(clip, tmp_path / "clip")
    code = main(["convert", "to-bigvision", str(tmp_path / "clip"), str(out)])
    assert code == 2 and "got CLIP" in capsys.readouterr().err
    assert out.read_bytes() == before
