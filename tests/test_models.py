"""The ViT and the one-tower CLIPPO model: sizes from the paper, shapes, invariants, round trips."""

import pytest
import torch

import clippo
from clippo.factory import create_model
from clippo.models import CLIPPO, ViT, ViTConfig, count_parameters
from clippo.models.clippo import text_pixels_to_input
from clippo.models.vit import attend


@pytest.mark.parametrize(
    "name, millions",
    [("clippo-B/16", 93), ("clippo-L/16", 316)],  # CLIPPO paper, Table 1 (truncated to 1M)
)
def test_parameter_count_matches_paper(name, millions):
    with torch.device("meta"):
        model = create_model(name)
    assert count_parameters(model) // 10**6 == millions


def test_untied_clippo_has_two_full_vits():
    with torch.device("meta"):
        tied, untied = create_model("clippo-B/16"), create_model("clippo-untied-B/16")
    # The text ViT duplicates everything except the temperature.
    assert count_parameters(untied) == 2 * count_parameters(tied) - 1


def test_vit_variant_table_and_patch_from_name():
    cfg = ViTConfig.from_variant("So400m/14", image_size=224)
    assert (cfg.width, cfg.depth, cfg.mlp_dim, cfg.num_heads, cfg.patch_size) == (
        1152,
        27,
        4304,
        16,
        14,
    )


def test_unknown_variant_and_model_name_raise():
    with pytest.raises(ValueError, match="unknown ViT variant 'Q'"):
        ViTConfig.from_variant("Q/16")
    with pytest.raises(ValueError, match="unknown model name 'clip-X/16'"):
        create_model("clip-X/16")
    with pytest.raises(ValueError, match=r"unknown model option\(s\) \['depht'\]"):
        create_model("clippo-Ti/16", depht=3)


def _tiny(**kw) -> CLIPPO:
    torch.manual_seed(0)
    return create_model("clippo-mu/8", image_size=32, out_dim=16, **kw)


def test_embeddings_are_l2_normalised_and_shaped():
    model = _tiny()
    z = model.encode_image(torch.rand(3, 3, 32, 32) * 2 - 1)
    assert z.shape == (3, 16)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))


def test_temperature_initialised_to_log_10():
    model = _tiny()
    assert model.t.item() == pytest.approx(2.302585, abs=1e-6)
    assert model.logit_scale is model.t and model.logit_scale.requires_grad  # open_clip's meaning
    assert model.logit_scale.exp().item() == pytest.approx(10.0, rel=1e-6)
    _, _, scale = model(torch.zeros(1, 3, 32, 32), model.preprocess_text(["x"]))
    assert scale.item() == pytest.approx(10.0, rel=1e-6)  # forward hands the loss exp(t)


def test_text_pixels_map_like_value_range_minus1_1():
    px = torch.tensor([[[0, 127, 255]]], dtype=torch.uint8)
    x = text_pixels_to_input(px)
    assert x.shape == (1, 3, 1, 3)
    torch.testing.assert_close(x[0, :, 0], torch.tensor([[-1.0, 127 / 255 * 2 - 1, 1.0]] * 3))
    with pytest.raises(ValueError, match="expected uint8 text images"):
        text_pixels_to_input(px.float())


def test_shared_tower_encodes_text_pixels_like_images():
    # One tower: a text image is just an image with three equal channels.
    model = _tiny().eval()
    px = torch.randint(0, 2, (2, 32, 32), dtype=torch.uint8) * 127
    torch.testing.assert_close(
        model.encode_text_pixels(px), model.encode_image(text_pixels_to_input(px))
    )


@pytest.mark.parametrize("tower", ["separate", "separate_embedding", "separate_head"])
def test_untied_text_towers_differ_from_image_path(tower):
    model = _tiny(text_tower=tower).eval()
    px = torch.randint(0, 2, (2, 32, 32), dtype=torch.uint8) * 127
    assert not torch.allclose(
        model.encode_text_pixels(px), model.encode_image(text_pixels_to_input(px))
    )


@pytest.mark.parametrize("pool", ["map", "gap", "tok"])
@pytest.mark.parametrize("posemb", ["learn", "sincos2d"])
def test_vit_pooling_and_posemb_options(pool, posemb):
    vit = ViT(
        ViTConfig.from_variant(
            "mu/8", image_size=32, pool_type=pool, posemb=posemb, num_classes=5, rep_size=7
        )
    )
    out = vit.forward_features(torch.zeros(2, 3, 32, 32))
    assert out["encoded"].shape == (2, 16 + (pool == "tok"), 32)
    assert out["pre_logits"].shape == (2, 7) and out["logits"].shape == (2, 5)


def test_vit_rejects_wrong_image_size():
    vit = ViT(ViTConfig.from_variant("mu/8", image_size=32))
    with pytest.raises(ValueError, match="expected 32x32 images, got 64x64"):
        vit(torch.zeros(1, 3, 64, 64))


def test_sdpa_attention_equals_explicit_softmax_attention():
    torch.manual_seed(0)
    vit = ViT(ViTConfig.from_variant("mu/8", image_size=16))
    attn = vit.blocks[0].attn
    x = torch.randn(2, 5, 32)
    q, k, v = (m(x).view(2, 5, 2, 16).transpose(1, 2) for m in (attn.query, attn.key, attn.value))
    w = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1)
    expected = attn.out((w @ v).transpose(1, 2).reshape(2, 5, 32))
    torch.testing.assert_close(attn(x, x), expected, rtol=1e-5, atol=1e-6)


def test_cpu_bfloat16_attention_path_agrees_with_sdpa():
    # attend() skips the fused kernel for bf16 on CPU; it must compute the same function.
    torch.manual_seed(0)
    q, k, v = (torch.randn(4, 3, 49, 64) for _ in range(3))
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(attend(q, k, v), exact)  # float32: the SDPA path itself
    fast = attend(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert fast.dtype == torch.bfloat16
    torch.testing.assert_close(fast.float(), exact, rtol=0.02, atol=0.02)
    assert (fast.float() - exact).abs().mean() < 5e-3


def test_save_and_from_pretrained_round_trip(tmp_path):
    model = _tiny(render={"lower": False}).eval()
    clippo.save_pretrained(model, tmp_path)
    loaded = clippo.from_pretrained(tmp_path)
    assert loaded.cfg.to_dict() == model.cfg.to_dict()
    assert loaded.cfg.render == {"lower": False, "image_size": 32}
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded.encode_image(x), model.encode_image(x), rtol=0, atol=0)


def test_from_pretrained_names_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        clippo.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "name, options",
    [
        ("clippo-mu/8", {}),
        ("lit-uu-mu/8", {"image_tower": "vit"}),  # the pixel text tower
        ("clip-mu/8", {"tokenizer": "openclipart"}),
    ],
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model_encodes_fp32_images_and_text_like_fp32(
    name, options, dtype, openclipart_tokenizer, tmp_path
):
    if options.get("tokenizer"):
        options = {**options, "tokenizer": str(openclipart_tokenizer)}
    torch.manual_seed(0)
    clippo.save_pretrained(create_model(name, image_size=32, out_dim=16, **options), tmp_path)
    full = clippo.from_pretrained(tmp_path)
    half = clippo.from_pretrained(tmp_path).to(dtype)  # what the user wrote
    images, texts = torch.rand(3, 3, 32, 32) * 2 - 1, ["a cat", "ein Hund", "a red heart"]
    for encode, x in (("encode_image", images), ("encode_text", texts)):
        z = getattr(half, encode)(x)
        assert z.dtype == dtype
        # Half precision keeps ~3 digits: the embeddings point the same way.
        cos = torch.nn.functional.cosine_similarity(z.float(), getattr(full, encode)(x))
        assert cos.min() > 0.999, (encode, cos)
