"""`clippo analyze gap` and `clippo analyze patches`: the files and figures they write, for every
model kind, and the errors for what they cannot read."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from clippo.analysis import mismatched_pair_distances, modality_gap, pair_distances
from clippo.cli import main
from clippo.convert import convert_big_vision, to_big_vision
from clippo.eval.sets import embed_shards
from clippo.factory import create_model
from clippo.jobs.analyze import patch_kernels
from clippo.models import save_pretrained


@pytest.fixture
def val_pattern(openclipart_small):
    out, stats = openclipart_small
    return str(out / stats["val_pattern"])


def _saved(tmp_path, name="clippo-mu/16", **kw):
    torch.manual_seed(0)
    model = create_model(name, **{"image_size": 32, **kw}).eval()
    return model, save_pretrained(model, tmp_path / name.replace("/", "_"))


def _png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_gap_writes_the_figures_and_the_numbers_of_its_embeddings(
    tmp_path, val_pattern, capsys, one_thread
):
    model, model_dir = _saved(tmp_path, out_dim=16)
    out = tmp_path / "gap"
    code = main(["analyze", "gap", "--model", str(model_dir), "--data", val_pattern,
                 "--out", str(out), "--limit", "30"])  # fmt: skip
    assert code == 0
    written = json.loads((out / "gap.json").read_text())
    # The same numbers from the embeddings every evaluation computes, pair i = image i, text i.
    e = embed_shards(model, val_pattern, max_examples=30, captions="first")
    assert written["pairs"] == len(e.text) == 30
    assert written["modality_gap"] == pytest.approx(modality_gap(e.image, e.text), rel=1e-6)
    assert written["pair_distance"]["mean"] == pytest.approx(
        pair_distances(e.image, e.text).mean, rel=1e-6
    )
    assert written["mismatched_pair_distance"]["median"] == pytest.approx(
        mismatched_pair_distances(e.image, e.text, seed=0).median, rel=1e-6
    )
    assert len(written["pca_explained_variance"]) == 2
    for name in ("gap_scatter.png", "pair_distances.png"):
        width, height = _png_size(out / name)
        assert width > 300 and height > 200
    printed = capsys.readouterr().out
    assert re.search(rf"modality gap +{written['modality_gap']:.4f}\n", printed)
    assert "gap_scatter.png" in printed


@pytest.mark.parametrize(
    ("name", "kw", "towers"),
    [
        ("clippo-mu/16", {}, ["image"]),
        ("clippo-untied-mu/16", {}, ["image", "text"]),
        ("clippo-mu/16", {"text_tower": "separate_embedding"}, ["image", "text"]),
        ("clip-mu/16", {"vocab_size": 50}, ["image"]),
        ("1t-clip-mu/16", {"vocab_size": 50}, ["image"]),
        ("lit-uu-mu/16", {"image_tower": "vit"}, ["image", "text"]),
    ],
)
def test_patches_writes_one_grid_per_patch_embedding(tmp_path, name, kw, towers):
    model, model_dir = _saved(tmp_path, name, **kw)
    out = tmp_path / "patches"
    assert main(["analyze", "patches", "--model", str(model_dir), "--out", str(out)]) == 0
    written = json.loads((out / "patches.json").read_text())
    assert list(written["towers"]) == towers
    for tower in towers:
        entry = written["towers"][tower]
        assert len(entry["explained_variance"]) == 30 and written["k"] == 30
        assert 0 < entry["explained_variance_total"] <= 1
        assert 0 <= entry["horizontal_frequency_share"] <= 1
        width, height = _png_size(out / f"patches_{tower}.png")
        assert width > height > 100  # 3 rows of 10 tiles
    kernels = patch_kernels(model)
    assert [tuple(k.shape) for k, _ in kernels.values()] == [(32, 3, 16, 16)] * len(towers)


def test_untied_text_tower_is_analysed_from_its_own_kernel(tmp_path):
    model, model_dir = _saved(tmp_path, "clippo-untied-mu/16")
    with torch.no_grad():  # text filters that vary only left-right: horizontal share 1
        x = torch.arange(16.0)
        for i in range(32):
            pattern = torch.cos(2 * torch.pi * (i % 7 + 1) * x / 16) * (i % 5 - 2)
            model.text.patch_embed.weight[i] = pattern.expand(3, 16, 16)
    save_pretrained(model, model_dir)
    out = tmp_path / "p"
    assert (
        main(["analyze", "patches", "--model", str(model_dir), "--out", str(out), "--k", "4"]) == 0
    )
    towers = json.loads((out / "patches.json").read_text())["towers"]
    assert towers["text"]["horizontal_frequency_share"] == pytest.approx(1.0)
    assert 0.3 < towers["image"]["horizontal_frequency_share"] < 0.7  # random init: isotropic


def test_a_converted_big_vision_checkpoint_is_analysed_like_the_original(tmp_path, val_pattern):
    model, model_dir = _saved(tmp_path, out_dim=16)
    to_big_vision(model, tmp_path / "bv.npz")
    convert_big_vision(tmp_path / "bv.npz", tmp_path / "converted")
    for source, out in ((model_dir, "a"), (tmp_path / "converted", "b")):
        assert main(["analyze", "patches", "--model", str(source), "--out", str(tmp_path / out),
                     "--k", "5"]) == 0  # fmt: skip
    a, b = (json.loads((tmp_path / o / "patches.json").read_text())["towers"] for o in "ab")
    np.testing.assert_allclose(
        a["image"]["explained_variance"], b["image"]["explained_variance"], rtol=1e-6
    )


def test_missing_model_npz_and_text_less_models_are_one_line_errors(tmp_path, val_pattern, capsys):
    out = str(tmp_path / "o")
    assert main(["analyze", "patches", "--model", str(tmp_path / "nope"), "--out", out]) == 2
    assert f"{tmp_path / 'nope'}: no such model directory" in capsys.readouterr().err
    (tmp_path / "x.npz").write_bytes(b"")
    assert main(["analyze", "gap", "--model", str(tmp_path / "x.npz"), "--data", val_pattern,
                 "--out", out]) == 2  # fmt: skip
    assert "clippo convert bigvision" in capsys.readouterr().err
    vit = create_model("clippo-mu/16", image_size=32).image
    save_pretrained(vit, tmp_path / "vit")
    assert main(["analyze", "gap", "--model", str(tmp_path / "vit"), "--data", val_pattern,
                 "--out", out]) == 2  # fmt: skip
    assert "ViT, which embeds no text" in capsys.readouterr().err
    assert main(["analyze", "gap", "--model", str(tmp_path / "vit"), "--data",
                 str(tmp_path / "none-*.tar"), "--out", out]) == 2  # fmt: skip
    assert "none-*.tar" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_analyze_needs_a_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["analyze"])
    assert "{gap,patches,tokens}" in capsys.readouterr().err
