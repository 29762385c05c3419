"""The tokenized baselines CLIP* and 1T-CLIP and the text transformer: sizes from the paper,
shapes, sharing, the common text interface, round trips."""

import pickle
import shutil

import numpy as np
import pytest
import torch

import clippo
from clippo.factory import create_model, list_models
from clippo.models import (
    CLIP,
    OneTowerCLIP,
    TextTransformer,
    TextTransformerConfig,
    count_parameters,
)
from clippo.tokenizer import EOS_ID, Tokenizer


@pytest.mark.parametrize(
    "name, millions",
    [("clip-B/16", 203), ("1t-clip-B/16", 118)],  # CLIPPO paper, Table 1 (32k vocabulary)
)
def test_parameter_count_matches_paper(name, millions):
    with torch.device("meta"):
        model = create_model(name)
    assert model.vocab_size == 32_000
    assert count_parameters(model) // 10**6 == millions


def test_one_tower_clip_is_clippo_plus_token_and_position_embeddings():
    with torch.device("meta"):
        one_tower, pixels = create_model("1t-clip-B/16"), create_model("clippo-B/16")
    assert count_parameters(one_tower) == count_parameters(pixels) + (32_000 + 196) * 768
    assert {k.split(".")[0] for k in one_tower.state_dict()} == {
        "image",
        "token_embed",
        "text_pos_embed",
        "t",
    }


def test_factory_knows_every_family_and_variant():
    names = list_models()
    for name in ("clip-B/16", "1t-clip-B/16", "clippo-untied-B/16", "clip-mu/16", "1t-clip-L/16"):
        assert name in names
    assert isinstance(create_model("clip-mu/16", image_size=32), CLIP)
    assert isinstance(create_model("1t-clip-mu/16", image_size=32), OneTowerCLIP)


def test_text_tower_follows_vit_size_unless_overridden():
    model = create_model("clip-Ti/16", image_size=32, depth=2, max_len=10, vocab_size=50)
    text = model.cfg.text
    assert (text.width, text.depth, text.mlp_dim, text.num_heads) == (192, 2, 768, 3)
    assert (text.max_len, text.vocab_size, text.pool_type, text.num_classes) == (
        10,
        50,
        "last",
        768,
    )
    model = create_model("clip-mu/16", image_size=32, text={"pool_type": "map", "depth": 3})
    assert model.cfg.text.depth == 3 and model.text.map_head is not None


def test_unknown_options_raise():
    with pytest.raises(ValueError, match=r"unknown text option\(s\) \['pool'\]"):
        create_model("clip-mu/16", text={"pool": "map"})
    with pytest.raises(ValueError, match=r"unknown model option\(s\) \['text'\]"):
        create_model("1t-clip-mu/16", text={})
    with pytest.raises(ValueError, match=r"unknown model option\(s\) \['tokenizer'\]"):
        create_model("clippo-mu/16", tokenizer="x.model")
    with pytest.raises(ValueError, match="text pool_type must be one of"):
        TextTransformerConfig(pool_type="cls")


@pytest.mark.parametrize("pool", ["last", "first", "gap", "max", "map"])
def test_text_transformer_pooling_shapes(pool):
    torch.manual_seed(0)
    tt = TextTransformer(
        TextTransformerConfig.from_variant("mu", vocab_size=20, max_len=6, pool_type=pool)
    )
    tokens = torch.randint(0, 20, (3, 6))
    out = tt.forward_features(tokens)
    assert out["encoded"].shape == (3, 6, 32) and out["pre_logits"].shape == (3, 32)
    assert tt(tokens).shape == (3, 32)  # no head
    with_head = TextTransformer(TextTransformerConfig.from_variant("mu", max_len=6, num_classes=5))
    assert with_head(tokens).shape == (3, 5)


def test_last_pooling_reads_the_last_position_only_through_attention():
    torch.manual_seed(0)
    tt = TextTransformer(TextTransformerConfig.from_variant("mu", vocab_size=20, max_len=6))
    tokens = torch.randint(2, 20, (1, 6))
    tokens[0, -1] = EOS_ID
    out = tt.forward_features(tokens)
    torch.testing.assert_close(out["pre_logits"], out["encoded"][:, -1])
    changed = tokens.clone()
    changed[0, 0] = (tokens[0, 0] + 1) % 20  # no causal mask: every token reaches the last
    assert not torch.allclose(tt(changed), tt(tokens))


def test_text_transformer_rejects_bad_token_input():
    tt = TextTransformer(TextTransformerConfig.from_variant("mu", vocab_size=20, max_len=6))
    with pytest.raises(ValueError, match=r"expected integer token ids \(N, 6\)"):
        tt(torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="expected integer token ids"):
        tt(torch.zeros(2, 6))


def _tiny(name, tokenizer, **kw):
    torch.manual_seed(0)
    return create_model(name, image_size=32, out_dim=16, tokenizer=str(tokenizer), max_len=24, **kw)


@pytest.mark.parametrize("name", ["clip-mu/16", "1t-clip-mu/16"])
def test_encode_text_tokenizes_inside_and_matches_encode_text_input(name, openclipart_tokenizer):
    model = _tiny(name, openclipart_tokenizer).eval()
    assert model.vocab_size == 300  # taken from the tokenizer
    texts = ["a red car", "Piano Keyboard showing tones", "x" * 500]
    z = model.encode_text(texts)
    assert z.shape == (3, 16)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))
    tokens = np.stack([model.text_transform(t) for t in texts])
    assert tokens.shape == (3, 24) and tokens.dtype == np.int32
    torch.testing.assert_close(model.encode_text_input(torch.from_numpy(tokens)), z)
    zimg, ztxt, scale = model(torch.zeros(3, 3, 32, 32), torch.from_numpy(tokens))
    assert zimg.shape == ztxt.shape == (3, 16) and scale.item() == pytest.approx(10.0)
    # DataLoader workers receive the transform by pickling.
    clone = pickle.loads(pickle.dumps(model.text_transform))
    np.testing.assert_array_equal(clone(texts[1]), tokens[1])


def test_one_tower_clip_shares_the_vit_between_images_and_tokens(openclipart_tokenizer):
    model = _tiny("1t-clip-mu/16", openclipart_tokenizer).eval()
    tokens = torch.from_numpy(model.text_transform("a red car"))[None]
    embedded = model.token_embed(tokens.long()) + model.text_pos_embed
    expected = model.image.head(
        model.image.map_head(model.image.norm(model.image.blocks[0](embedded)))
    )
    torch.testing.assert_close(model.encode_text_input(tokens, normalize=False), expected)


def test_tokenizer_larger_than_the_embedding_raises(openclipart_tokenizer):
    with pytest.raises(ValueError, match="300 pieces but the model embeds only 100"):
        _tiny("clip-mu/16", openclipart_tokenizer, vocab_size=100)


def test_model_without_tokenizer_says_how_to_get_one():
    model = create_model("clip-mu/16", image_size=32)
    with pytest.raises(ValueError, match="clippo tokenizer train"):
        model.encode_text(["a cat"])


def test_clippo_text_transform_is_its_renderer():
    torch.manual_seed(0)
    model = create_model("clippo-mu/16", image_size=32, out_dim=16).eval()
    assert model.text_transform is model.renderer
    px = torch.from_numpy(model.text_transform(["a cat", "ein Hund"]))
    torch.testing.assert_close(model.encode_text_input(px), model.encode_text_pixels(px))
    torch.testing.assert_close(
        model.encode_text(["a cat", "ein Hund"]), model.encode_text_pixels(px)
    )


@pytest.mark.parametrize("name", ["clip-mu/16", "1t-clip-mu/16"])
def test_save_and_from_pretrained_round_trip_with_tokenizer(name, openclipart_tokenizer, tmp_path):
    kw = {"text": {"pool_type": "gap"}} if name.startswith("clip-") else {}
    model = _tiny(name, openclipart_tokenizer, **kw).eval()
    clippo.save_pretrained(model, tmp_path / "saved")
    assert (
        tmp_path / "saved" / "tokenizer.model"
    ).read_bytes() == openclipart_tokenizer.read_bytes()
    # The directory is self-contained: it still loads after moving it.
    shutil.move(tmp_path / "saved", tmp_path / "moved")
    loaded = clippo.from_pretrained(tmp_path / "moved")
    assert type(loaded) is type(model)
    expected = {**model.cfg.to_dict(), "tokenizer": str(tmp_path / "moved" / "tokenizer.model")}
    assert loaded.cfg.to_dict() == expected
    texts = ["a red car", "piano"]
    torch.testing.assert_close(loaded.encode_text(texts), model.encode_text(texts), rtol=0, atol=0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded.encode_image(x), model.encode_image(x), rtol=0, atol=0)
    # Saving a loaded model into its own directory keeps the tokenizer in place.
    clippo.save_pretrained(loaded, tmp_path / "moved")
    assert Tokenizer(tmp_path / "moved" / "tokenizer.model").vocab_size == 300
