"""Co-training with text pairs: batch composition, the text path, the loss, resume, configs."""

import itertools
import json
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_run_tree
from safetensors.torch import load_file

from clippo.data import TextPairDataset
from clippo.data.build.textpairs import (
    FORTUNES_DIR,
    nsp_pairs,
    read_fortunes,
    split_sentences,
    write_text_pair_shards,
)
from clippo.data.build.translations import cldr_pairs
from clippo.factory import create_model
from clippo.jobs.pretrain import train
from clippo.models.clippo import text_pixels_to_input
from clippo.render import UnifontRenderer
from clippo.train.checkpoint import list_checkpoints
from clippo.train.config import ConfigError, load_config
from clippo.train.distributed import DistEnv
from clippo.train.tasks import build_model, build_train_loader

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fortune_pairs(tmp_path_factory):
    """120 real next-sentence pairs from the science fortunes, in 5 shards of 24."""
    documents = [split_sentences(e) for e in read_fortunes(FORTUNES_DIR / "science")]
    pairs = list(nsp_pairs(documents))[:120]
    out = tmp_path_factory.mktemp("fortune_pairs")
    stats = write_text_pair_shards(pairs, out, source="nsp", shard_size=24)
    assert len(stats["shards"]["train"]) == 5
    return str(out / stats["train_pattern"]), set(pairs)


def _symmetric_ce(logits):
    """CLIP's loss written out: mean of the row-wise and column-wise cross-entropy."""
    target = torch.arange(logits.shape[0])
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def _cfg(images, pairs, **sets):
    tree = tiny_run_tree(images)
    del tree["eval"]  # these runs train only (the CLI test below evaluates)
    tree["data"] |= {"text_pairs": pairs[0], "text_pair_fraction": 0.25}
    tree["optim"] = {"name": "adafactor", "lr": 1e-3, "schedule": {"warmup_steps": 2}}
    tree["train"] = {"total_steps": 4, "log_every": 2, "ckpt_every": 4, "threads": 1}
    for dotted, value in sets.items():
        section, key = dotted.split(".")
        tree[section][key] = value
    return load_config(tree)


def test_every_batch_holds_exact_image_and_pair_counts(openclipart_small, fortune_pairs):
    cfg = _cfg(openclipart_small, fortune_pairs)
    model = build_model(cfg)
    seen = []
    for i, batch in zip(range(6), build_train_loader(cfg, model, DistEnv(), 0), strict=False):
        assert batch["image"].shape == (6, 3, 32, 32) and batch["text_input"].shape == (6, 32, 32)
        assert batch["pair_text_a_input"].shape == batch["pair_text_b_input"].shape == (2, 32, 32)
        assert len(batch["text"]) == 6 and len(batch["pair_text_a"]) == 2, i
        pairs = list(zip(batch["pair_text_a"], batch["pair_text_b"], strict=True))
        assert set(pairs) <= fortune_pairs[1]
        assert torch.equal(batch["pair_text_b_input"], model.preprocess_text(batch["pair_text_b"]))
        seen += pairs
    assert len(set(seen)) == 12  # two workers, 12 of 120 pairs: none twice


def test_ranks_split_the_pairs_like_the_images(openclipart_small, fortune_pairs):
    cfg = _cfg(openclipart_small, fortune_pairs, **{"data.workers": 0})
    model = build_model(cfg)
    per_rank = []
    for rank in (0, 1):
        loader = build_train_loader(cfg, model, DistEnv(rank=rank, world_size=2), 0)
        batches = [b for _, b in zip(range(5), loader, strict=False)]
        assert all(len(b["key"]) == 3 and len(b["pair_key"]) == 1 for b in batches)
        per_rank.append({k for b in batches for k in b["pair_key"]})
    assert len(per_rank[0]) == len(per_rank[1]) == 5 and not per_rank[0] & per_rank[1]
    # One ordered pass: the ranks' shares are disjoint and cover every pair.
    epoch = [
        [p for b in TextPairDataset(fortune_pairs[0], batch_size=7, train=False, rank=r,
                                    world_size=2)
         for p in zip(b["text_a"], b["text_b"], strict=True)]
        for r in (0, 1)
    ]  # fmt: skip
    assert not set(epoch[0]) & set(epoch[1]) and set(epoch[0] + epoch[1]) == fortune_pairs[1]


def test_loader_resumes_the_pair_stream_with_the_image_stream(openclipart_small, fortune_pairs):
    cfg = _cfg(openclipart_small, fortune_pairs)
    model = build_model(cfg)
    straight = [b for _, b in zip(range(7), build_train_loader(cfg, model, DistEnv(), 0),
                                  strict=False)]  # fmt: skip
    resumed = [b for _, b in zip(range(4), build_train_loader(cfg, model, DistEnv(), 3),
                                 strict=False)]  # fmt: skip
    for a, b in zip(straight[3:], resumed, strict=True):
        assert a["key"] == b["key"] and a["pair_key"] == b["pair_key"]
        assert torch.equal(a["image"], b["image"])
        assert torch.equal(a["pair_text_a_input"], b["pair_text_a_input"])
    assert straight[0]["pair_key"] != resumed[0]["pair_key"]


def test_both_sides_of_a_pair_go_through_the_text_path(openclipart_small, fortune_pairs):
    # Untied towers: the image path and the text path give different embeddings.
    cfg = _cfg(openclipart_small, fortune_pairs, **{"data.workers": 0})
    model = create_model("clippo-untied-mu/16", image_size=32, out_dim=16).eval()
    batch = next(iter(build_train_loader(cfg, model, DistEnv(), 0)))
    with torch.no_grad():
        zimg, ztxt, _ = model(
            batch["image"], batch["text_input"],
            (batch["pair_text_a_input"], batch["pair_text_b_input"]),
        )  # fmt: skip
        a_as_image = model.encode_image(text_pixels_to_input(batch["pair_text_a_input"]))
        expected_img = torch.cat(
            [model.encode_image(batch["image"]), model.encode_text(batch["pair_text_a"])]
        )
        expected_txt = model.encode_text(batch["text"] + batch["pair_text_b"])
    torch.testing.assert_close(zimg, expected_img, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ztxt, expected_txt, rtol=1e-5, atol=1e-5)
    assert (zimg[6:] - a_as_image).abs().max() > 1e-2


def test_loop_loss_is_the_contrastive_loss_over_the_whole_mixed_batch(
    openclipart_small, fortune_pairs, tmp_path
):
    cfg = _cfg(
        openclipart_small,
        fortune_pairs,
        **{"data.workers": 0, "train.total_steps": 1, "train.log_every": 1},
    )
    logged = {}
    train(cfg, tmp_path, on_step=lambda step, metrics: logged.update(metrics or {}))
    # The loop seeds torch, then builds the model first: the same weights and first batch.
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg)
    batch = next(iter(build_train_loader(cfg, model, DistEnv(), 0)))
    with torch.no_grad():
        zimg = torch.cat(
            [model.encode_image(batch["image"]), model.encode_text(batch["pair_text_a"])]
        )
        ztxt = model.encode_text(batch["text"] + batch["pair_text_b"])
        logits = model.logit_scale.exp() * zimg @ ztxt.T
    assert logits.shape == (8, 8)
    direct, images_only = _symmetric_ce(logits), _symmetric_ce(logits[:6, :6])
    assert logged["train/loss"] == pytest.approx(direct.item(), rel=1e-5)
    assert abs(direct.item() - images_only.item()) > 1e-3


def test_resume_with_text_pairs_continues_exactly(openclipart_small, fortune_pairs, tmp_path):
    # 9 steps x 8/6 (two of eight rows are text pairs) = 12 steps, checkpoints at 6 and 12.
    cfg = _cfg(
        openclipart_small,
        fortune_pairs,
        **{
            "train.total_steps": 9,
            "train.keep_image_pairs_constant": True,
            "train.ckpt_every": 6,
            "train.log_every": 3,
            "train.keep_ckpts": 5,
        },
    )
    assert cfg.effective_total_steps == 12
    run = tmp_path / "run"
    train(cfg, run)
    final = load_file(run / "model" / "model.safetensors")
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6, 9, 12]
    assert {r["train/total_steps"] for r in records} == {12}
    ckpts = dict(list_checkpoints(run / "checkpoints"))
    assert sorted(ckpts) == [6, 12]
    ckpts[12].unlink()
    for f in (run / "model").iterdir():
        f.unlink()
    train(cfg, run, resume=True)
    resumed = load_file(run / "model" / "model.safetensors")
    for k in final:
        torch.testing.assert_close(resumed[k], final[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize(
    "sets, message",
    [
        ({"data.text_pair_fraction": 1.5}, r"data.text_pair_fraction must lie in \[0, 1\]"),
        ({"data.text_pair_fraction": -0.1}, r"data.text_pair_fraction must lie in \[0, 1\]"),
        (
            {"data.text_pair_fraction": 1.0, "train.keep_image_pairs_constant": True},
            "no image pairs are seen",
        ),
        ({"data.text_pairs": None}, "data.text_pairs: a text-pair shard pattern is required"),
        ({"data.text_pair_fraction": 0.05}, "gives 0 text pairs per batch"),
        ({"data.text_pair_fraction": 0.95}, "gives 8 text pairs per batch"),
        ({"data.text_pair_fractoin": 0.5}, "unknown config key 'data.text_pair_fractoin'"),
        ({"train.keep_image_pairs_constant": "yes"}, "keep_image_pairs_constant: expected"),
    ],
)
def test_config_rejects_bad_text_pair_settings(openclipart_small, fortune_pairs, sets, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(openclipart_small, fortune_pairs, **sets)


def test_text_pairs_only_trains_on_pairs_with_the_contrastive_loss(
    openclipart_small, fortune_pairs, tmp_path
):
    # text_pair_fraction 1.0 (the paper's text-only ablation): every row is a text pair.
    sets = {"data.text_pair_fraction": 1.0, "data.workers": 0, "train.total_steps": 1,
            "train.log_every": 1}  # fmt: skip
    cfg = _cfg(openclipart_small, fortune_pairs, **sets)
    assert cfg.data.text_pairs_per_batch == 8 and cfg.effective_total_steps == 1
    logged = {}
    train(cfg, tmp_path, on_step=lambda step, metrics: logged.update(metrics or {}))
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg)
    batch = next(iter(build_train_loader(cfg, model, DistEnv(), 0)))
    assert "image" not in batch and len(batch["pair_text_a"]) == 8
    assert set(zip(batch["pair_text_a"], batch["pair_text_b"], strict=True)) <= fortune_pairs[1]
    with torch.no_grad():
        za, zb, scale = model(None, None, (batch["pair_text_a_input"],
                                           batch["pair_text_b_input"]))  # fmt: skip
        torch.testing.assert_close(za, model.encode_text(batch["pair_text_a"]))
        torch.testing.assert_close(zb, model.encode_text(batch["pair_text_b"]))
        logits = scale * za @ zb.T
    direct = _symmetric_ce(logits)
    assert logged["train/loss"] == pytest.approx(direct.item(), rel=1e-5)
    assert (tmp_path / "model" / "model.safetensors").exists()


@pytest.mark.parametrize(
    "batch, fraction, keep, steps",
    [(256, 0.25, True, 800), (256, 0.5, True, 1200), (256, 0.5, False, 600), (10, 0.0, True, 600)],
)
def test_step_rule_keeps_image_pairs_seen_constant(batch, fraction, keep, steps):
    cfg = load_config(
        {
            "data": {"batch_size": batch, "text_pairs": "x.tar", "text_pair_fraction": fraction},
            "train": {"total_steps": 600, "keep_image_pairs_constant": keep},
        }
    )
    assert cfg.effective_total_steps == steps


@pytest.mark.parametrize("name", ["1t-clip-mu/16", "clip-mu/16"])
def test_token_models_read_both_sides_of_a_pair_as_token_ids(
    name, openclipart_small, fortune_pairs, openclipart_tokenizer, tmp_path
):
    # 1T-CLIP co-trained with text pairs (the paper's baseline for CLIPPO's co-training), and
    # CLIP*, whose text tower reads both sides: the pairs are token ids, as the alt-texts.
    options = {"image_size": 32, "out_dim": 16, "tokenizer": str(openclipart_tokenizer)}
    sets = {"model.name": name, "model.options": options, "train.total_steps": 1,
            "train.log_every": 1, "data.workers": 0}  # fmt: skip
    cfg = _cfg(openclipart_small, fortune_pairs, **sets)
    logged = {}
    train(cfg, tmp_path, on_step=lambda step, metrics: logged.update(metrics or {}))
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg)
    batch = next(iter(build_train_loader(cfg, model, DistEnv(), 0)))
    max_len = model.cfg.max_len
    assert batch["text_input"].shape == (6, max_len)
    assert batch["pair_text_a_input"].shape == batch["pair_text_b_input"].shape == (2, max_len)
    assert batch["pair_text_a_input"].dtype == batch["text_input"].dtype
    with torch.no_grad():
        zimg, ztxt, scale = model(
            batch["image"],
            batch["text_input"],
            (batch["pair_text_a_input"], batch["pair_text_b_input"]),
        )
        expected_img = torch.cat(
            [model.encode_image(batch["image"]), model.encode_text(batch["pair_text_a"])]
        )
        expected_txt = model.encode_text(batch["text"] + batch["pair_text_b"])
        torch.testing.assert_close(zimg, expected_img, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ztxt, expected_txt, rtol=1e-5, atol=1e-5)
    direct = _symmetric_ce(scale * zimg @ ztxt.T)
    assert logged["train/loss"] == pytest.approx(direct.item(), rel=1e-5)


def test_packaged_demo_textpairs_mirrors_demo_with_25_percent_pairs():
    from clippo.train.config import resolve_config

    demo = load_config(resolve_config("demo")).to_dict()
    pairs = load_config(resolve_config("demo_textpairs"))
    assert pairs.data.text_pairs_per_batch == 64 and pairs.effective_total_steps == 1600
    mixed = pairs.to_dict()
    pair_keys = {"data": ["train", "text_pairs", "text_pair_fraction"],
                 "train": ["keep_image_pairs_constant"]}  # fmt: skip
    for section, keys in pair_keys.items():
        for key in keys:
            demo[section].pop(key), mixed[section].pop(key)
    assert mixed == demo, "demo_textpairs.yaml must equal demo.yaml except its text-pair keys"


def test_cli_trains_demo_textpairs_and_reports_the_step_rule(
    openclipart_small, fortune_pairs, tmp_path, capsys
):
    from clippo.cli import main

    out, stats = openclipart_small
    small = {
        "model.name": "clippo-mu/16",
        "model.options": "{image_size: 32, out_dim: 16}",
        "data.train": out / stats["train_pattern"],
        "eval.sets.val.data": out / stats["val_pattern"],
        "data.text_pairs": fortune_pairs[0],
        "data.batch_size": 8,
        "data.workers": 0,
        "data.shuffle_buffer": 20,
        "train.total_steps": 3,
        "train.threads": 1,
        "train.precision": "fp32",
        "optim.schedule.warmup_steps": 1,
        "eval.sets.val.evaluators.fewshot.train_examples": 60,
    }
    sets = [a for k, v in small.items() for a in ("--set", f"{k}={v}")]
    assert main(["train", "demo_textpairs", "--workdir", str(tmp_path), *sets]) == 0
    printed = capsys.readouterr().out
    assert "co-training: 2 text pairs + 6 image pairs per batch of 8; 4 steps" in printed
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [4]


def _lit_cfg(images, pairs, tmp_path, **sets):
    """``_cfg`` with lit_demo's Lu model at 32 px: cached locked features, no augmentation."""
    lit = {
        "model.name": "lit-Lu-mu/16",
        "model.options": {"image_size": 32},
        "data.image_cache": str(tmp_path / "cache"),
        "data.augment": {"flip": False, "random_resized_crop": None},
        "data.workers": 0,
    }
    return _cfg(images, pairs, **(lit | sets))


def test_lit_reads_both_sides_of_a_pair_with_its_text_tower_beside_cached_features(
    openclipart_small, fortune_pairs, tmp_path
):
    cfg = _lit_cfg(
        openclipart_small, fortune_pairs, tmp_path,
        **{"train.total_steps": 1, "train.log_every": 1},
    )  # fmt: skip
    logged = {}
    train(cfg, tmp_path / "run", on_step=lambda step, metrics: logged.update(metrics or {}))
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg)
    batch = next(iter(build_train_loader(cfg, model, DistEnv(), 0)))
    assert batch["image"].shape == (6, 1280)  # the locked tower's cached features
    assert batch["pair_text_a_input"].shape == (2, 32, 32)  # rendered, as the alt-texts
    with torch.no_grad():
        zimg, ztxt, scale = model(
            text_input=batch["text_input"],
            text_pairs=(batch["pair_text_a_input"], batch["pair_text_b_input"]),
            image_features=batch["image"],
        )
        expected_img = torch.cat(
            [model.encode_image_features(batch["image"]), model.encode_text(batch["pair_text_a"])]
        )
        expected_txt = model.encode_text(batch["text"] + batch["pair_text_b"])
        torch.testing.assert_close(zimg, expected_img, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ztxt, expected_txt, rtol=1e-5, atol=1e-5)
        # Without the pairs the same call is LiT's plain image/alt-text forward.
        features, text_input = batch["image"], batch["text_input"]
        plain_img, plain_txt, _ = model(text_input=text_input, image_features=features)
        torch.testing.assert_close(plain_img, zimg[:6])
        torch.testing.assert_close(plain_txt, ztxt[:6])
    direct = _symmetric_ce(scale * zimg @ ztxt.T)
    assert logged["train/loss"] == pytest.approx(direct.item(), rel=1e-5)
    assert abs(direct.item() - _symmetric_ce((scale * zimg @ ztxt.T)[:6, :6]).item()) > 1e-3


def test_cli_trains_packaged_lit_multilingual_config(
    openclipart_small, fortune_pairs, tmp_path, capsys
):
    from clippo.cli import main

    out, stats = openclipart_small
    small = {
        "model.name": "lit-Lu-mu/16",
        "model.options.image_size": 32,
        "data.train": out / stats["train_pattern"],
        "data.image_cache": tmp_path / "cache",
        "data.text_pairs": fortune_pairs[0],
        "eval.sets.val.data": out / stats["val_pattern"],
        "data.batch_size": 8,
        "data.workers": 0,
        "data.shuffle_buffer": 20,
        "train.total_steps": 3,
        "train.threads": 1,
        "train.precision": "fp32",
        "optim.schedule.warmup_steps": 1,
    }
    sets = [a for k, v in small.items() for a in ("--set", f"{k}={v}")]
    assert main(["train", "lit_multilingual", "--workdir", str(tmp_path / "w"), *sets]) == 0
    printed = capsys.readouterr().out
    assert "co-training: 4 text pairs + 4 image pairs per batch of 8; 6 steps" in printed
    assert "i2t_recall@1" in printed
    saved = json.loads((tmp_path / "w" / "model" / "config.json").read_text())
    assert saved["model_type"] == "lit" and saved["image_mode"] == "L"


def _spaces_before(render, text, pixels, most):
    """How many leading spaces ``text`` was drawn after: the one count in 0..``most`` whose
    render equals ``pixels`` (None if none does)."""
    counts = [n for n in range(most + 1) if np.array_equal(render(" " * n + text), pixels)]
    assert len(counts) <= 1, f"{text!r}: two counts draw the same pixels"
    return counts[0] if counts else None


def test_leading_spaces_draw_every_training_text_after_0_to_n_spaces_and_resume(
    openclipart_small, fortune_pairs
):
    sets = {"data.workers": 0, "data.augment": {"leading_spaces": 3}}
    cfg = _cfg(openclipart_small, fortune_pairs, **sets)
    torch.manual_seed(0)
    model = build_model(cfg)
    render = model.text_transform
    batches = list(itertools.islice(iter(build_train_loader(cfg, model, DistEnv(), 0)), 3))
    counts = []
    for batch in batches:
        for texts, key in (("text", "text_input"), ("pair_text_a", "pair_text_a_input"),
                           ("pair_text_b", "pair_text_b_input")):  # fmt: skip
            for text, pixels in zip(batch[texts], batch[key].numpy(), strict=True):
                counts.append(_spaces_before(render, text, pixels, 3))
    assert None not in counts  # every input is its text after 0..3 spaces (the text unchanged)
    assert set(counts) == {0, 1, 2, 3}  # 30 texts (6 alt-texts, 2 pairs a batch): each count
    # The draws are a function of (seed, epoch, key): a resumed loader draws the same.
    resumed = next(iter(build_train_loader(cfg, model, DistEnv(), 2)))
    for key in ("text_input", "pair_text_a_input", "pair_text_b_input"):
        assert torch.equal(batches[2][key], resumed[key])
    # Off by default, and never at evaluation: the text as written.
    plain = next(iter(build_train_loader(_cfg(openclipart_small, fortune_pairs, **{
        "data.workers": 0}), model, DistEnv(), 0)))  # fmt: skip
    pairs = zip(plain["pair_text_b"], plain["pair_text_b_input"].numpy(), strict=True)
    assert all(np.array_equal(render(t), p) for t, p in pairs)
    evaluation = TextPairDataset(fortune_pairs[0], batch_size=4, text_transform=render,
                                 train=False, leading_spaces=3)  # fmt: skip
    batch = next(iter(evaluation))
    assert all(np.array_equal(render(t), p) for t, p in
               zip(batch["text_b"], batch["text_b_input"].numpy(), strict=True))  # fmt: skip
    with pytest.raises(ValueError, match="leading_spaces must be an int >= 0, got -1"):
        TextPairDataset(fortune_pairs[0], batch_size=4, leading_spaces=-1)


def test_leading_spaces_need_rendered_text_and_pre_training(
    openclipart_small, fortune_pairs, openclipart_tokenizer
):
    options = {"image_size": 32, "out_dim": 16, "tokenizer": str(openclipart_tokenizer)}
    sets = {"model.name": "1t-clip-mu/16", "model.options": options, "data.workers": 0,
            "data.augment": {"leading_spaces": 2}}  # fmt: skip
    cfg = _cfg(openclipart_small, fortune_pairs, **sets)
    model = build_model(cfg)
    message = r"leading_spaces=2 shifts rendered text; OneTowerCLIP \(1t-clip-mu/16\) reads text"
    with pytest.raises(ValueError, match=message):
        build_train_loader(cfg, model, DistEnv(), 0)
    with pytest.raises(ConfigError, match="data.augment.leading_spaces must be >= 0, got -1"):
        _cfg(openclipart_small, fortune_pairs, **{"data.augment": {"leading_spaces": -1}})


@pytest.fixture(scope="module")
def tamil_pairs(tmp_path_factory):
    """48 real English-Tamil pairs (CLDR emoji names: short, so two fit one 64 px canvas)."""
    pairs = cldr_pairs("ta")[:48]
    out = tmp_path_factory.mktemp("tamil_pairs")
    stats = write_text_pair_shards(pairs, out, source="translation", shard_size=12)
    return str(out / stats["train_pattern"]), pairs


def _join(pair, other, first):
    """``pair`` joined with ``other`` on both sides, ``pair`` first or second."""
    x, y = (pair, other) if first else (other, pair)
    return f"{x[0]} {y[0]}", f"{x[1]} {y[1]}"


def _pair_batches(pattern, n, **kwargs):
    reader = TextPairDataset(pattern, batch_size=8, seed=3, shuffle_buffer=16, **kwargs)
    return list(itertools.islice(iter(reader), n))


def test_join_pairs_join_two_pairs_of_a_batch_on_both_sides_and_resume(tamil_pairs):
    render = UnifontRenderer(64)
    plain = _pair_batches(tamil_pairs[0], 4)  # the same stream, nothing joined
    joined = _pair_batches(tamil_pairs[0], 4, text_transform=render, join_pairs=1.0)
    kinds = Counter()
    for before, after in zip(plain, joined, strict=True):
        assert after["key"] == before["key"]
        originals = list(zip(before["text_a"], before["text_b"], strict=True))
        for i, (a, b) in enumerate(zip(after["text_a"], after["text_b"], strict=True)):
            partners = [  # (other pair, this pair first?) whose join gives (a, b)
                (j, first)
                for j, other in enumerate(originals)
                for first in (True, False)
                if j != i and (a, b) == _join(originals[i], other, first)
            ]
            if (a, b) == originals[i]:  # drawn, but the join would not fit: left alone
                kinds["alone"] += 1
            else:  # joined with one other pair of the batch, on both sides in one order
                assert len(partners) == 1, (a, b)
                kinds["first" if partners[0][1] else "second"] += 1
                assert render.fits([a, b]).all()
        # What is rendered is the string as joined.
        for side in ("text_a", "text_b"):
            assert np.array_equal(after[f"{side}_input"].numpy(), render(after[side]))
    assert kinds["first"] and kinds["second"] and kinds["alone"], kinds  # 32 pairs: each kind
    # A resumed reader joins the same; at evaluation and at probability 0 nothing is joined.
    resumed = _pair_batches(tamil_pairs[0], 1, text_transform=render, join_pairs=1.0,
                            start_batch=3)[0]  # fmt: skip
    assert resumed["text_b"] == joined[3]["text_b"]
    assert torch.equal(resumed["text_b_input"], joined[3]["text_b_input"])
    for kwargs in ({"join_pairs": 0.0}, {"join_pairs": 1.0, "train": False}):
        batch = _pair_batches(tamil_pairs[0], 1, text_transform=render, **kwargs)[0]
        assert set(zip(batch["text_a"], batch["text_b"], strict=True)) <= set(tamil_pairs[1])
    half = _pair_batches(tamil_pairs[0], 4, join_pairs=0.5)  # no transform: every draw joins
    together = sum(a not in dict(tamil_pairs[1]) for b in half for a in b["text_a"])
    assert 8 <= together <= 24, together  # of 32, about half
    with pytest.raises(ValueError, match=r"join_pairs must be a probability in \[0, 1\], got 2"):
        TextPairDataset(tamil_pairs[0], batch_size=8, join_pairs=2)


def test_join_pairs_reach_the_training_loader(openclipart_small, tamil_pairs):
    cfg = _cfg(openclipart_small, tamil_pairs, **{"data.augment": {"join_pairs": 0.25}})
    loader = build_train_loader(cfg, build_model(cfg), DistEnv(), 0)
    assert loader.dataset.pairs.join_pairs == 0.25
    assert loader.dataset.pairs.text_transform.fits is not None
