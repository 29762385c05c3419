"""The conventions open_clip and Hugging Face users bring: images as they hold them, one
preprocessing, one-call zero-shot classification, save/load as methods, folder embedding."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clippo
from clippo.data import ImageTransform, load_image
from clippo.eval.sets import embed_shards
from clippo.factory import create_model
from clippo.jobs.search import embed_folder, embed_image_files, image_files
from clippo.models import CLIP, CLIPPO, ViT, ViTConfig
from clippo.models.io import model_types
from clippo.prompts import build_zeroshot_classifier, load_prompts

PNGS = sorted(Path("/usr/share/openclipart/png/animals").rglob("*.png"))[:3]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("clippo-mu/16", image_size=32, out_dim=16).eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three real clip-art images (one as JPEG, in a sub-folder) and one broken file."""
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    Image.open(PNGS[0]).save(root / "a.png")
    Image.open(PNGS[1]).convert("RGB").save(root / "sub" / "b.jpg")
    Image.open(PNGS[2]).save(root / "c.png")
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def test_encode_image_takes_paths_pil_arrays_and_uint8_like_the_preprocessed_tensor(model, folder):
    paths = [folder / "a.png", folder / "c.png"]
    pixels = torch.stack([model.image_transform(load_image(p)) for p in paths])
    expected = model.encode_image(pixels)
    pil = [Image.open(p) for p in paths]
    arrays = [np.asarray(load_image(p)) for p in paths]
    uint8 = ((pixels + 1) * 127.5).round().to(torch.uint8)  # exact: pixels are k / 127.5 - 1
    for images in (paths, [str(p) for p in paths], pil, arrays, uint8, [pixels[0], paths[1]]):
        assert torch.allclose(model.encode_image(images), expected, atol=1e-6)
    assert model.encode_image(paths[0]).shape == (1, 16)  # one image, not a list
    assert torch.allclose(model.encode_image(pixels[0]), expected[:1], atol=1e-6)
    # A JPEG path decodes as the shard reader does: at reduced scale when much larger.
    jpeg = folder / "sub" / "b.jpg"
    drafted = model.image_transform(load_image(jpeg, draft_size=32))
    assert torch.allclose(model.encode_image(jpeg), model.encode_image(drafted), atol=1e-6)


@pytest.mark.parametrize(
    "images, error, match",
    [
        (torch.rand(1, 3, 32, 32) * 255, ValueError, r"must lie in \[-1, 1\].*x / 127.5 - 1"),
        (torch.full((1, 3, 32, 32), float("nan")), ValueError, "NaN or inf"),
        (torch.zeros(1, 1, 32, 32), ValueError, r"expected images \(N, 3, H, W\)"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.int64), TypeError, "float in \\[-1, 1\\] or uint8"),
        ([], ValueError, "no images to encode"),
        ([3.5], TypeError, r"images\[0\] is float"),
        ([np.zeros((8, 8), np.uint8)], ValueError, r"uint8 \(H, W, 3\|4\)"),
        (["/nonexistent/cat.jpg"], FileNotFoundError, "image file not found"),
    ],
)
def test_encode_image_refuses_bad_input_naming_the_problem(model, images, error, match):
    with pytest.raises(error, match=match):
        model.encode_image(images)


def test_unscaled_zero_one_images_warn_and_wrong_size_names_resampling(model):
    with pytest.warns(UserWarning, match=r"unscaled \[0, 1\] images \(use x \* 2 - 1\)"):
        model.encode_image(torch.rand(2, 3, 32, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a genuine [-1, 1] batch is silent
        model.encode_image(torch.rand(2, 3, 32, 32) * 2 - 1)
    with pytest.raises(ValueError, match="expected 32x32 images, got 64x64"):
        model.encode_image(torch.zeros(1, 3, 64, 64))


def test_classify_is_clip_prompt_ensemble_softmax(model, folder):
    paths = [folder / "a.png", folder / "c.png"]
    names = ["cat", "bird", "car"]
    probs = model.classify(paths, names, templates="openclipart")
    _, templates = load_prompts("openclipart")
    weights = build_zeroshot_classifier(model.encode_text, names, templates)
    with torch.no_grad():
        logits = model.logit_scale.exp() * model.encode_image(paths) @ weights.T
    assert probs.shape == (2, 3)
    assert torch.allclose(probs, logits.softmax(-1), atol=1e-6)
    own = model.classify(paths, names, templates=["a drawing of a {}."])
    with torch.no_grad():
        bare = model.encode_text([f"a drawing of a {n}." for n in names])
        ref = (model.logit_scale.exp() * model.encode_image(paths) @ bare.T).softmax(-1)
    assert torch.allclose(own, ref, atol=1e-5)


@pytest.mark.parametrize(
    "names, templates, error, match",
    [
        ("cat", "imagenet", TypeError, "list of class names"),
        ([], "imagenet", ValueError, "no texts"),
        (["cat"], ["no placeholder"], ValueError, "one '\\{\\}' each"),
        (["cat"], "nope", ValueError, "unknown prompt set 'nope'"),
    ],
)
def test_classify_refuses_bad_class_names_and_templates(
    model, folder, names, templates, error, match
):
    with pytest.raises(error, match=match):
        model.classify([folder / "a.png"], names, templates=templates)


def test_create_model_and_transforms_gives_the_evaluation_preprocessing(model, tmp_path):
    built, train_tf, preprocess = clippo.create_model_and_transforms(
        "clippo-mu/16", image_size=32, out_dim=16
    )
    assert isinstance(built, CLIPPO) and built.image_size == 32
    assert (preprocess.size, preprocess.train, preprocess.crop) == (32, False, "center")
    assert train_tf.train and train_tf.random_resized_crop == (0.6, 1.0)
    model.save_pretrained(tmp_path / "m")
    for loaded, _, pre in (
        clippo.create_model_and_transforms(tmp_path / "m"),
        clippo.create_model_and_transforms("clippo-mu/16", pretrained=tmp_path / "m"),
    ):
        assert torch.equal(loaded.t, model.t) and pre.size == 32
    with pytest.raises(ValueError, match="apply to a new model"):
        clippo.create_model_and_transforms(tmp_path / "m", out_dim=8)
    with pytest.raises(FileNotFoundError, match="neither a model directory nor a .npz"):
        clippo.create_model_and_transforms("clippo-mu/16", pretrained=tmp_path / "missing")


def test_one_preprocessing_for_evaluation_search_and_encode_image(model, folder, openclipart_small):
    assert repr(model.image_transform) == repr(ImageTransform(32, train=False))
    # Evaluation embeds shards with it: the first held-out image, by hand, gives the same row.
    shard = sorted(openclipart_small[0].glob("val-*.tar"))[0]
    with tarfile.open(shard) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith((".png", ".jpg")))
        data = tar.extractfile(member).read()
    embedded = embed_shards(model, str(shard), with_texts=False, max_examples=4)
    by_hand = model.encode_image(model.image_transform(load_image(data, draft_size=32)))
    assert torch.allclose(embedded.image[0], by_hand[0], atol=1e-6)
    emb, kept, skipped = embed_image_files(model, image_files(folder))
    assert torch.allclose(emb, model.encode_image(kept), atol=1e-6)
    assert list(skipped) == [str(folder / "broken.png")]


def test_save_and_load_as_methods_with_dtype_and_kind_checks(model, tmp_path):
    d = model.save_pretrained(tmp_path / "m")
    loaded = CLIPPO.from_pretrained(d, torch_dtype="bfloat16")
    assert loaded.t.dtype == torch.bfloat16 and not loaded.training
    assert clippo.from_pretrained(d, torch_dtype=torch.float16).t.dtype == torch.float16
    z = CLIPPO.from_pretrained(d).encode_text(["a cat"])
    assert torch.allclose(z, model.encode_text(["a cat"]))
    with pytest.raises(ValueError, match="holds a 'clippo' model, not a CLIP: load it with"):
        CLIP.from_pretrained(d)
    with pytest.raises(ValueError, match="unknown torch_dtype 'int8'"):
        clippo.from_pretrained(d, torch_dtype="int8")
    vit = ViT(ViTConfig(width=16, depth=1, mlp_dim=32, num_heads=2, image_size=16, patch_size=8))
    again = ViT.from_pretrained(vit.save_pretrained(tmp_path / "vit"))
    assert all(torch.equal(a, b) for a, b in zip(vit.parameters(), again.parameters(), strict=True))
    assert {"clippo", "clip", "1t-clip", "lit", "vit", "text_classifier"} <= set(model_types())


def test_embed_folder_writes_embeddings_paths_and_skips(model, folder, tmp_path):
    out, counts = embed_folder(
        model, tmp_path / "e.npz", images=folder, texts=["a cat", "ein Hund"]
    )
    assert counts == {"images": 3, "skipped": 1, "texts": 2}
    data = np.load(out)
    assert list(data["image_paths"]) == ["a.png", "c.png", "sub/b.jpg"]
    assert list(data["skipped_paths"]) == ["broken.png"]
    assert list(data["skipped_reasons"]) == ["broken"]
    paths = [folder / p for p in data["image_paths"]]
    assert np.allclose(
        data["image_embeddings"], model.encode_image(paths).detach().numpy(), atol=1e-6
    )
    assert np.allclose(
        data["text_embeddings"], model.encode_text(["a cat", "ein Hund"]).detach().numpy()
    )
    with pytest.raises(ValueError, match="nothing to embed"):
        embed_folder(model, tmp_path / "x.npz")
    with pytest.raises(ValueError, match="is a .npz file"):
        embed_folder(model, tmp_path / "x.txt", texts=["a"])


def test_clippo_embed_cli(model, folder, tmp_path):
    model.save_pretrained(tmp_path / "m")
    texts = tmp_path / "t.txt"
    texts.write_text("a cat\n\nein Hund\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "clippo.cli", "embed", str(folder), "--model", str(tmp_path / "m")]
        + ["--texts", str(texts), "--out", str(tmp_path / "e.npz")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "3 images, 1 skipped, 2 texts; wrote" in done.stdout
    assert np.load(tmp_path / "e.npz")["text_embeddings"].shape == (2, 16)
