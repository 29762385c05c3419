"""VQA's grid protocol (CLIP-ViL section 3.1): grid and question features of every encoder kind,
the MCAN fusion and its padding mask, the frozen encoder and its feature cache, the model
directory, the lr grid on the engine and the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clippo.cli import main
from clippo.data.build.vqa import build_vqa_shards
from clippo.data.vqa import (
    VQAShardDataset,
    build_vqa_feature_caches,
    read_vocabulary,
    split_pattern,
    vqa_inputs,
)
from clippo.eval.vqa import predict_vqa
from clippo.factory import create_model
from clippo.jobs.vqa import evaluate_vqa, finetune_vqa
from clippo.models import from_pretrained, save_pretrained
from clippo.models.heads import image_tower
from clippo.models.lit import EfficientNetLite0
from clippo.models.vqa_grid import (
    ByteEmbedding,
    MCANConfig,
    MCANFusion,
    QuestionBytes,
    VQAGridConfig,
    VQAGridModel,
)
from clippo.schema import ConfigError
from clippo.train.config import load_config, resolve_config
from clippo.train.tasks import VQAGridTask, grid_protocol_config

FIXTURE = Path(__file__).parent / "fixtures" / "vqav2"  # scripts/make_vqav2_layout_fixture.py
ANSWERS = ["no", "1", "blue", "gray", "green", "red", "yes"]
SMALL = MCANConfig(width=32, layers=2, heads=2, mlp_dim=64, dropout=0.1, max_bytes=24)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The VQAv2 layout fixture as shards: 7 answers, 1 of 4 training images held out."""
    out = tmp_path_factory.mktemp("vqav2_grid")
    build_vqa_shards(f"vqav2:{FIXTURE}", out, min_count=1, holdout=0.25, shard_size=3)
    return out


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A tiny SentencePiece model (T5's ids: EOS 1) trained on question-like texts."""
    from clippo.tokenizer import train_tokenizer

    texts = [
        f"{w} {c} {s} in the image?"
        for w in ("is there a", "what color is the", "how many", "does it show a")
        for c in ("red", "blue", "green", "gray", "yellow")
        for s in ("circle", "square", "triangle", "shape")
    ]
    return train_tokenizer(texts, tmp_path_factory.mktemp("tok") / "q.model", 36)


def _clippo(**kw):
    return create_model("clippo-mu/16", image_size=32, **kw)


def _grid(backbone, question="encoder", freeze=True) -> VQAGridModel:
    cfg = VQAGridConfig(answers=list(ANSWERS), question=question, fusion=SMALL)
    cfg.freeze_encoder = freeze
    return VQAGridModel(backbone, cfg)


def _images(n=3, size=32):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


# -- grid and question features ---------------------------------------------------------------


@pytest.mark.parametrize("pool_type", ["gap", "map", "tok"])
def test_vit_grid_is_the_patch_tokens_after_the_final_norm(pool_type):
    vit = create_model("clippo-mu/16", image_size=64, pool_type=pool_type).image.eval()
    x = _images(2, 64)
    tokens = vit.tokens(x)
    assert tokens.shape == (2, 16, 32)  # 4x4 patches, no class token
    encoded = vit.forward_features(x)["encoded"]
    torch.testing.assert_close(tokens, encoded[:, 1:] if pool_type == "tok" else encoded)
    if pool_type == "gap":  # what the pooled features are made of
        torch.testing.assert_close(tokens.mean(1), vit.forward_features(x)["head_input"])


def test_efficientnet_grid_is_its_last_feature_map_as_tokens():
    net = EfficientNetLite0(image_size=64, pretrained=False).eval()
    x = _images(2, 64)
    tokens = net.tokens(x)
    assert tokens.shape == (2, 4, 1280)  # 64 / 32 = 2 per side
    torch.testing.assert_close(tokens.mean(1), net(x))  # the pooled features LiT reads


def test_clippo_question_mask_ends_at_the_last_patch_with_ink():
    model = create_model("clippo-mu/16", image_size=64).eval()
    pixels = model.preprocess_text(["a", "is there a red circle in the image?", ""])
    tokens, mask = model.text_tokens(pixels)
    assert tokens.shape == (3, 16, 32)
    # "a": ink in the first patch only; the long question fills 3 lines of 4 patches (16 px
    # each) and part of the last patch row; the empty text keeps its first patch.
    assert mask[0].tolist() == [True] + [False] * 15
    last = int(np.flatnonzero(mask[1].numpy())[-1])
    assert 8 <= last < 16 and mask[1, : last + 1].all() and not mask[1, last + 1 :].any()
    assert mask[2].tolist() == [True] + [False] * 15
    torch.testing.assert_close(
        tokens, model.image.tokens(pixels[:, None].expand(-1, 3, -1, -1).float() / 127.5 - 1)
    )


@pytest.mark.parametrize("name", ["clip-mu/16", "1t-clip-mu/16"])
def test_token_models_mask_the_eos_padding(name, tokenizer):
    model = create_model(name, image_size=32, tokenizer=str(tokenizer), max_len=12).eval()
    ids = model.preprocess_text(["red circle", "is there a green square in the image?"])
    tokens, mask = model.text_tokens(ids)
    assert tokens.shape == (2, 12, 32)
    first_eos = (ids == model.tokenizer.eos_id).int().argmax(1)
    for row, eos in enumerate(first_eos.tolist()):
        assert mask[row].tolist() == [i <= eos for i in range(12)]
    assert not mask[0].all()  # a short text has padding


# -- the fusion and the model -----------------------------------------------------------------


def test_changing_padded_question_positions_does_not_change_the_output():
    torch.manual_seed(0)
    fusion = MCANFusion(SMALL, image_dim=12, question_dim=10).eval()
    grid, question = torch.randn(2, 5, 12), torch.randn(2, 7, 10)
    mask = torch.tensor([[True] * 3 + [False] * 4, [True] * 6 + [False]])
    out = fusion(grid, question, mask)
    changed = question.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 10) * 100
    torch.testing.assert_close(fusion(grid, changed, mask), out)
    changed[0, 1, 0] += 1.0  # a real token does count
    assert not torch.allclose(fusion(grid, changed, mask), out)


def test_grid_model_logits_ignore_question_padding_end_to_end():
    model = _grid(_clippo()).eval()
    x = _images(2)
    features, mask = model.encode_question(
        torch.as_tensor(model.question_transform(["red?", "is it red?"]))
    )
    mask[:, -1] = False  # the last patch holds no text in either
    logits = model(x, question_features=features, question_mask=mask)
    assert logits.shape == (2, len(ANSWERS))
    features[:, -1] = 50.0
    torch.testing.assert_close(model(x, question_features=features, question_mask=mask), logits)


def test_fusion_learns_to_compare_the_question_with_the_grid(one_thread):
    """A question about a colour ("is there a red shape?") over a grid that holds one colour:
    "yes" 7 times in 12, and neither side alone does better than always "yes" (58%); above 95%
    needs the guided attention from the grid to the question's bytes."""
    torch.manual_seed(0)
    colours = ["red", "green", "blue", "gray", "teal", "brown"]

    def batch(n: int, g: torch.Generator):
        shown = torch.randint(0, 6, (n,), generator=g)
        asked = torch.randint(0, 6, (n,), generator=g)
        asked = torch.where(torch.rand(n, generator=g) < 0.5, shown, asked)
        grid = torch.nn.functional.one_hot(shown, 8).float()[:, None].repeat(1, 4, 1)
        grid = grid + 0.1 * torch.randn(n, 4, 8, generator=g)
        text = [f"is there a {colours[a]} shape?" for a in asked]
        return grid, torch.as_tensor(QuestionBytes(24)(text)), (shown == asked).long()

    cfg = MCANConfig(width=32, layers=1, heads=4, mlp_dim=64, dropout=0.0, max_bytes=24)
    embed, fusion = ByteEmbedding(24, 32), MCANFusion(cfg, image_dim=8, question_dim=32)
    head = torch.nn.Linear(64, 2)
    params = [*embed.parameters(), *fusion.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(150):
        grid, question, label = batch(64, g)
        loss = torch.nn.functional.cross_entropy(head(fusion(grid, *embed(question))), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    grid, question, label = batch(1000, torch.Generator().manual_seed(9))
    with torch.no_grad():
        accuracy = (head(fusion(grid, *embed(question))).argmax(-1) == label).float().mean()
    assert accuracy > 0.95


def test_byte_questions_read_utf8_bytes_with_padding():
    ids = QuestionBytes(6)(["né?", "abcdefgh"])
    assert ids.tolist() == [[111, 196, 170, 64, 0, 0], [98, 99, 100, 101, 102, 103]]
    model = _grid(EfficientNetLite0(image_size=32, pretrained=False), question="bytes").eval()
    ids = torch.as_tensor(model.question_transform(["is it red?", "how many?"]))
    assert ids.shape == (2, SMALL.max_bytes)
    x = _images(2)
    logits = model(x, ids)
    assert logits.shape == (2, len(ANSWERS))
    # Padding columns are dropped before the fusion: the same logits without them.
    torch.testing.assert_close(model(x, ids[:, :10]), logits)
    ids[1, 9] = 33  # a real byte where the shorter question had padding
    assert not torch.allclose(model(x, ids)[1], logits[1])


def test_encoder_question_needs_a_text_side():
    with pytest.raises(ValueError, match="gives no per-token text features"):
        _grid(_clippo().image)


def test_frozen_encoder_gets_no_gradient_and_stays_in_eval_mode():
    model = _grid(_clippo())
    model.train()
    assert not model.backbone.training and model.fusion.training
    q = torch.as_tensor(model.question_transform(["is it red?", "what color?", "1?"]))
    model(_images(), q).sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.fusion.parameters())

    tuned = _grid(_clippo(), freeze=False)
    tuned.train()
    assert tuned.backbone.training
    tuned(_images(), q).sum().backward()
    assert tuned.backbone.image.blocks[0].attn.query.weight.grad.abs().sum() > 0


def test_unfrozen_encoder_gets_the_encoder_lr_multiplier(shards, tmp_path):
    cfg = _cfg(shards, **{"finetune.freeze_encoder": "false"})
    derived = grid_protocol_config(cfg, tmp_path)
    assert derived.optim.lr_mults == {r"backbone\..*": 0.1}
    assert derived.finetune.feature_cache == str(tmp_path / "feature_cache")
    assert grid_protocol_config(_cfg(shards), tmp_path).optim.lr_mults == {}


def test_grid_model_round_trips_through_a_model_directory(tmp_path, tokenizer):
    x = _images(2)
    backbones = {
        "clippo": (_clippo(), "encoder"),
        "clip": (
            create_model("clip-mu/16", image_size=32, tokenizer=str(tokenizer), max_len=12),
            "encoder",
        ),
        "vit": (image_tower(_clippo()), "bytes"),
        "efficientnet": (EfficientNetLite0(image_size=32, pretrained=False), "bytes"),
    }
    for name, (backbone, question) in backbones.items():
        model = _grid(backbone, question=question).eval()
        q = torch.as_tensor(model.question_transform(["is it red?", "how many?"]))
        loaded = from_pretrained(save_pretrained(model, tmp_path / name))
        assert isinstance(loaded, VQAGridModel) and loaded.answers == ANSWERS
        assert loaded.cfg.question == question and loaded.cfg.fusion == SMALL
        torch.testing.assert_close(loaded(x, q), model(x, q), msg=name)
        assert not any(p.requires_grad for p in loaded.backbone.parameters())
    assert (tmp_path / "clip" / "tokenizer.model").is_file()


# -- the feature cache, the engine, the CLI ---------------------------------------------------


def test_cached_features_give_the_logits_of_the_live_encoder(shards, tmp_path):
    model = _grid(_clippo()).eval()
    urls = split_pattern(shards, "train")
    images, questions = build_vqa_feature_caches(
        urls,
        tmp_path,
        image_size=32,
        image_id=model.image_cache_id(),
        embed_images=model.image_grid,
        question_id=model.question_cache_id(),
        question_transform=model.question_transform,
        embed_questions=model.encode_question,
        batch_size=2,
    )
    assert len(images) == 3 and len(questions) == 3  # 3 images, 3 distinct questions
    assert images.meta["shape"] == [4, 32] and questions.has_mask
    common = dict(vocabulary=read_vocabulary(shards), image_size=32, image_mode="image")
    common |= dict(batch_size=8, train=False)
    live = next(iter(VQAShardDataset(urls, question_transform=model.question_transform, **common)))
    cached = next(
        iter(VQAShardDataset(urls, image_cache=images, question_cache=questions, **common))
    )
    assert cached["question_id"] == live["question_id"] and "image" not in cached
    with torch.no_grad():
        torch.testing.assert_close(
            model(**vqa_inputs(cached)), model(**vqa_inputs(live)), rtol=1e-5, atol=1e-5
        )
    # Scoring a split through its cache gives the live predictions.
    test = split_pattern(shards, "test")
    live_answers, _ = predict_vqa(model, test, batch_size=2)
    cached_answers, _ = predict_vqa(model, test, batch_size=2, feature_cache=tmp_path / "test")
    assert cached_answers == live_answers and (tmp_path / "test").is_dir()
    # A complete cache of the same shards is read back, not rebuilt.
    mtime = (images.directory / "features.npy").stat().st_mtime_ns
    build_vqa_feature_caches(
        urls, tmp_path, image_size=32, image_id=model.image_cache_id(), embed_images=None
    )
    assert (images.directory / "features.npy").stat().st_mtime_ns == mtime


def _cfg(data: Path, **extra):
    sets = {
        "finetune.data": data,
        "model.name": "clippo-mu/16",
        "model.options.image_size": 32,
        "finetune.lrs": "[0.001, 0.003]",
        "finetune.fusion.width": 32,
        "finetune.fusion.heads": 2,
        "finetune.fusion.mlp_dim": 64,
        "data.batch_size": 4,
        "data.workers": 0,
        "data.shuffle_buffer": 4,
        "train.total_steps": 3,
        "train.log_every": 1,
        "train.precision": "fp32",
        "eval.batch_size": 4,
    } | extra
    return load_config(resolve_config("vqa_grid"), [f"{k}={v}" for k, v in sets.items()])


def test_grid_protocol_picks_the_lr_on_holdout_and_scores_test_once(shards, tmp_path, one_thread):
    report = finetune_vqa(_cfg(shards), tmp_path / "run")
    assert report["protocol"] == "grid" and [r["lr"] for r in report["runs"]] == [0.001, 0.003]
    best = max(report["runs"], key=lambda r: r["holdout"]["vqa_accuracy"])
    assert report["best_lr"] == best["lr"] and report["num_questions"] == 3
    # One cache per split (the training split's serves both lrs), each image and question once.
    for split, images in (("train", 3), ("holdout", 1), ("test", 2)):
        caches = sorted((tmp_path / "run" / "feature_cache" / split).iterdir())
        assert [c.name.split("-")[0] for c in caches] == ["grid", "question"]
        assert json.loads((caches[0] / "meta.json").read_text())["count"] == images
    results = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert sorted(r["question_id"] for r in results) == [70, 71, 80]
    assert all(r["answer"] in ANSWERS for r in results)
    model = from_pretrained(report["model"])
    assert isinstance(model, VQAGridModel) and model.cfg.freeze_encoder
    again = evaluate_vqa(report["model"], shards, tmp_path / "eval")
    assert again["overall"] == report["overall"] and again["protocol"] == "grid"


def test_grid_config_errors_name_the_key(shards):
    with pytest.raises(ConfigError, match="finetune.question must be auto, encoder or bytes"):
        _cfg(shards, **{"finetune.question": "words"})
    with pytest.raises(ValueError, match="fusion width 30 is not divisible by 4 heads"):
        _cfg(shards, **{"finetune.fusion.width": 30, "finetune.fusion.heads": 4})
    with pytest.raises(ValueError, match="finetune.image_size is the fused protocol's canvas"):
        VQAGridTask(_cfg(shards, **{"finetune.image_size": 48, "finetune.feature_cache": "x"}))


def test_cli_finetunes_and_evaluates_the_grid_protocol(shards, tmp_path, capsys, one_thread):
    sets = {
        "model.options.image_size": 32,
        "finetune.fusion.width": 32,
        "finetune.fusion.heads": 2,
        "finetune.fusion.mlp_dim": 64,
        "finetune.question": "bytes",
        "data.workers": 0,
        "data.shuffle_buffer": 4,
        "train.precision": "fp32",
        "eval.batch_size": 4,
    }
    args = ["finetune", "vqa", "--data", str(shards), "--model", "clippo-mu/16"]
    args += ["--protocol", "grid", "--out", str(tmp_path / "ft"), "--lr", "0.001"]
    args += ["--steps", "2", "--batch-size", "4"]
    args += [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "<- best" in printed and "test VQA accuracy (x100) at lr 0.001" in printed
    model = tmp_path / "ft" / "lr_0.001" / "model"
    assert json.loads((model / "config.json").read_text())["question"] == "bytes"
    assert main(["eval", "vqa", "--model", str(model), "--data", str(shards)]) == 0
    report = json.loads((tmp_path / "ft" / "lr_0.001" / "vqa_test" / "metrics.json").read_text())
    ft = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert report["overall"] == ft["overall"] and report["protocol"] == "grid"
    assert set(ft) >= {"per_answer_type", "per_question_type", "best_lr", "runs", "model"}
