"""Image decoding (transparency, broken and huge files) and the ImageTransform preprocessing."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clippo.data.transforms import (
    BadImageError,
    ImageTransform,
    load_image,
    open_image,
    sample_rng,
    to_tensor,
)

OPENCLIPART = Path("/usr/share/openclipart/png")
HUGE_PNG = OPENCLIPART / "food/fruit/apple_mateya_01.png"  # 16800 x 10023 pixels


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def pixels(image: Image.Image) -> list[tuple[int, ...]]:
    return [tuple(px) for px in np.asarray(image).reshape(-1, 3).tolist()]


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (3, 1))
    image.putdata([(255, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 128)])
    out = load_image(encode(image))
    assert out.mode == "RGB"
    assert pixels(out) == [(255, 255, 255), (0, 0, 255), (127, 127, 127)]


def test_la_and_palette_transparency_are_composited_on_white():
    la = Image.new("LA", (2, 1))
    la.putdata([(0, 0), (0, 255)])
    assert pixels(load_image(encode(la))) == [(255, 255, 255), (0, 0, 0)]
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putdata([0, 1])
    data = encode(palette, transparency=0)  # palette entry 0 (red) is transparent
    assert pixels(load_image(data)) == [(255, 255, 255), (0, 255, 0)]


def test_truncated_image_raises_value_error_naming_the_source():
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"))
    with pytest.raises(ValueError, match="shard3/key7") as info:
        load_image(data[: len(data) // 2], name="shard3/key7")
    assert info.value.reason == "broken"


def test_garbage_bytes_raise_bad_image_error():
    with pytest.raises(BadImageError, match="not a readable image"):
        load_image(b"this is not an image")


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")


def test_image_above_pixel_cap_is_refused_from_its_header():
    with pytest.raises(BadImageError, match="exceeds max_pixels=40000000") as info:
        open_image(HUGE_PNG)  # 168 MP: would need ~670 MB if decoded
    assert info.value.reason == "too_large"
    small = encode(Image.new("RGB", (20, 10)))
    with pytest.raises(BadImageError, match="20x10 = 200 pixels exceeds max_pixels=199"):
        load_image(small, max_pixels=199)
    assert load_image(small, max_pixels=200).size == (20, 10)


def test_huge_jpeg_is_decoded_at_reduced_scale_instead_of_refused():
    data = encode(Image.new("RGB", (1600, 1200), (0, 128, 255)), "JPEG")
    out = load_image(data, max_pixels=500_000)
    assert out.size[0] * out.size[1] <= 500_000
    assert out.size == (800, 600)  # the largest of JPEG's 1/2, 1/4, 1/8 scales under the cap


def test_to_tensor_maps_0_255_to_minus_one_one():
    image = Image.new("RGB", (2, 1))
    image.putdata([(0, 0, 0), (255, 255, 255)])
    t = to_tensor(image)
    assert t.dtype == torch.float32 and t.shape == (3, 1, 2)
    assert torch.equal(t, torch.tensor([[[-1.0, 1.0]]] * 3))


def three_bands(width: int = 300, height: int = 100) -> Image.Image:
    arr = np.zeros((height, width, 3), np.uint8)
    third = width // 3
    arr[:, :third, 0] = 255
    arr[:, third : 2 * third, 1] = 255
    arr[:, 2 * third :, 2] = 255
    return Image.fromarray(arr)


def test_center_crop_keeps_the_middle_of_a_wide_image():
    out = ImageTransform(32)(three_bands())
    assert out.shape == (3, 32, 32)
    # The resampling filter reaches one source pixel past the crop box, so edges may blend.
    green = torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, 32, 30)
    assert torch.allclose(out[:, :, 1:-1], green, atol=1e-6)


def test_pad_keeps_the_whole_image_and_fills_with_white():
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    out = ImageTransform(20, crop="pad")(image)
    assert out.shape == (3, 20, 20)
    assert torch.equal(out[:, :5], torch.ones(3, 5, 20))  # top padding
    assert torch.equal(out[:, -5:], torch.ones(3, 5, 20))  # bottom padding
    red = torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1).expand(3, 10, 20)
    assert torch.allclose(out[:, 5:15], red)


def test_eval_transform_ignores_augmentation_settings():
    image = Image.effect_noise((64, 48), 40).convert("RGB")
    plain = ImageTransform(24)(image)
    aug = ImageTransform(24, flip=True, random_resized_crop=(0.1, 0.2), train=False)
    assert torch.equal(aug(image, key="a", epoch=3), plain)


def test_augmentation_is_a_function_of_seed_epoch_and_key():
    image = Image.effect_noise((80, 60), 60).convert("RGB")
    t = ImageTransform(32, train=True, flip=True, random_resized_crop=(0.3, 1.0), seed=5)
    assert torch.equal(t(image, key="k1", epoch=2), t(image, key="k1", epoch=2))
    outs = [t(image, key="k1", epoch=e) for e in range(6)]
    assert len({o.sum().item() for o in outs}) > 1
    other_seed = ImageTransform(32, train=True, flip=True, random_resized_crop=(0.3, 1.0), seed=6)
    assert not torch.equal(other_seed(image, key="k1", epoch=2), t(image, key="k1", epoch=2))


def test_flip_mirrors_about_half_of_the_keys():
    image = Image.effect_noise((40, 40), 60).convert("RGB")
    plain = ImageTransform(40)(image)
    t = ImageTransform(40, train=True, flip=True)
    flipped = 0
    for i in range(40):
        out = t(image, key=f"k{i}")
        if torch.equal(out, plain.flip(-1)):
            flipped += 1
        else:
            assert torch.equal(out, plain)
    assert 10 <= flipped <= 30


def bands_seen(out: torch.Tensor) -> int:
    pure = {(True, False, False), (False, True, False), (False, False, True)}
    return len(pure & {tuple(px) for px in (out > 0).flatten(1).T.tolist()})


def test_random_resized_crop_zooms_into_part_of_the_image():
    image = three_bands(300, 300)
    assert bands_seen(ImageTransform(30)(image)) == 3
    # A crop of 5% of the area (about 67 pixels wide) spans at most two 100-pixel bands.
    t = ImageTransform(30, train=True, random_resized_crop=(0.05, 0.05))
    assert all(bands_seen(t(image, key=f"k{i}")) <= 2 for i in range(10))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"crop": "middle"}, "crop must be 'center' or 'pad'"),
        ({"random_resized_crop": (0.0, 1.0)}, "0 < scale_min <= scale_max <= 1"),
        ({"random_resized_crop": (0.8, 0.5)}, "0 < scale_min <= scale_max <= 1"),
    ],
)
def test_bad_transform_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageTransform(32, **kwargs)


def test_sample_rng_depends_on_every_argument_only():
    base = sample_rng(1, 2, "key").random()
    assert sample_rng(1, 2, "key").random() == base
    for args in [(0, 2, "key"), (1, 3, "key"), (1, 2, "key2"), (1, 2, "key", 1)]:
        assert sample_rng(*args).random() != base
