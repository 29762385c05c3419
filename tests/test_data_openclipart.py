"""The openclipart shard builder: alt-text extraction, cleaning, skips, split and idempotence."""

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from clippo.data.build.openclipart import (
    build_openclipart_shards,
    clean_alt_texts,
    read_svg_metadata,
)

ROOT = Path("/usr/share/openclipart")
DUPLICATES = [  # byte-identical files in two categories
    "food/fruit/straw_tote_linda_kim_01.png",
    "people/clothing/straw_tote_linda_kim_01.png",
]
HUGE = "food/fruit/apple_mateya_01.png"  # 168 MP
NO_TEXT = "computer/mouse_pointer_wolfram_es_01.png"  # keywords "", "11", "computer" only
SMILEY_DESCRIPTION = "office/pen_pencil_darkon_01.png"  # description ":)", keyword "office"
EXTRA = [*DUPLICATES, HUGE, NO_TEXT, SMILEY_DESCRIPTION]
PARAMS = {"val_size": 6, "seed": 3, "image_size": 64, "shard_size": 10, "workers": 2}


def subset() -> list[str]:
    every = sorted(str(p.relative_to(ROOT / "png")) for p in (ROOT / "png").rglob("*.png"))
    return sorted(set(every[::250]) | set(EXTRA))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("openclipart")
    return out, build_openclipart_shards(out, files=subset(), **PARAMS)


def read_shard(path: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key, ext = member.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def test_svg_metadata_uses_the_work_title_not_the_creator():
    meta = read_svg_metadata(ROOT / "svg/recreation/music/trumpet_pocket_colour_ganso.svg")
    assert meta == {
        "title": "Pocket Trumpet B Flat (colour)",
        "description": "Pocket Trumpet in key of B flat.",
        "keywords": ["music", "equipment", "trumpet"],
    }


def test_svg_without_namespace_on_root_still_yields_metadata():
    meta = read_svg_metadata(ROOT / "svg/tools/nodding_donkey_kevin_cow_01.svg")
    assert meta == {"title": "nodding donkey", "description": "", "keywords": ["oil", "industry"]}


def test_malformed_svg_raises_value_error_naming_the_file(tmp_path):
    bad = tmp_path / "broken.svg"
    bad.write_text("<svg><metadata><title>unclosed</svg>")
    with pytest.raises(ValueError, match="broken.svg: SVG is not well-formed XML"):
        read_svg_metadata(bad)


def test_clean_alt_texts_drops_non_descriptive_fields_and_counts_them():
    kept, dropped = clean_alt_texts(
        " Red  Car ", "12345", ["", "red_car", "Red Car", "2004", "vehicle"], "transportation"
    )
    assert kept == {
        "title": "Red Car",
        "description": "",
        "keywords": ["red car", "vehicle"],
        "texts": ["Red Car", "red car, vehicle"],
    }
    assert dropped == Counter(description_no_letters=1, keyword_empty=1, keyword_no_letters=1)


def test_clean_alt_texts_drops_generic_keyword_lists_and_duplicate_descriptions():
    kept, dropped = clean_alt_texts("Fox", "fox", ["unsorted", "Animals"], "animals")
    assert kept["texts"] == ["Fox"]
    assert dropped == Counter(description_same_as_title=1, keywords_generic=1)
    kept, dropped = clean_alt_texts("", "", [], "animals")
    assert kept["texts"] == []
    assert dropped == Counter(title_empty=1, description_empty=1, keywords_empty=1)


def test_build_counts_duplicates_huge_and_textless_images(built):
    _, stats = built
    files = subset()
    assert stats["files"] == len(files)
    assert stats["skipped"] == {"duplicate_image": 1, "no_text": 1, "too_large": 1}
    assert stats["examples"] == len(files) - 3 == stats["train"] + stats["val"]
    assert stats["val"] == PARAMS["val_size"]
    assert stats["dropped_fields"]["description_no_letters"] == 1  # the ":)" description
    per_category = stats["per_category"]
    assert sum(c["train"] + c["val"] for c in per_category.values()) == stats["examples"]


def test_build_writes_categories_and_img2dataset_layout(built):
    out, stats = built
    categories = json.loads((out / "categories.json").read_text())
    assert categories == sorted(p.name for p in (ROOT / "png").iterdir()) and len(categories) == 22
    assert stats["train"] == 29  # 38 files - 3 skipped - 6 val: three shards of <= 10
    assert stats["train_pattern"] == "train-{000000..000002}.tar"
    assert stats["shards"]["val"] == ["val-000000.tar"]
    keys = {"train": set(), "val": set()}
    for split, names in stats["shards"].items():
        for name in names:
            for key, sample in read_shard(out / name).items():
                keys[split].add(key)
                assert sorted(sample) == ["jpg", "json", "txt"]
                meta = json.loads(sample["json"])
                assert meta["label"] == categories.index(meta["category"])
                assert meta["path"].startswith(f"png/{meta['category']}/")
                assert sample["txt"].decode() == meta["texts"][0]
                assert all(meta["texts"]) and meta["title"] in (meta["texts"][0], "")
                image = Image.open(io.BytesIO(sample["jpg"]))
                assert image.format == "JPEG" and image.mode == "RGB"
                assert max(image.size) <= PARAMS["image_size"]
    assert not keys["train"] & keys["val"]
    assert len(keys["train"]) == stats["train"] and len(keys["val"]) == stats["val"]


def test_transparent_background_is_stored_white(built):
    out, stats = built
    for name in stats["shards"]["train"]:
        for sample in read_shard(out / name).values():
            if json.loads(sample["json"])["path"] == f"png/{SMILEY_DESCRIPTION}":
                image = Image.open(io.BytesIO(sample["jpg"])).convert("RGB")
                assert all(v >= 250 for v in image.getpixel((0, 0)))  # a transparent corner
                return
    pytest.fail(f"{SMILEY_DESCRIPTION} not found in the train shards")


def test_rebuild_with_same_parameters_is_skipped_and_new_parameters_rebuild(tmp_path):
    files = subset()[:12]
    params = {**PARAMS, "val_size": 2}
    first = build_openclipart_shards(tmp_path, files=files, **params)
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert build_openclipart_shards(tmp_path, files=files, **params) == first
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes
    second = build_openclipart_shards(tmp_path, files=files, **{**params, "shard_size": 100})
    assert second["shards"]["train"] == ["train-000000.tar"]
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["train-000000.tar", "val-000000.tar"]


def test_split_depends_on_seed(tmp_path):
    files = subset()[:12]
    vals = []
    for seed in (0, 1):
        out = tmp_path / str(seed)
        build_openclipart_shards(out, files=files, **{**PARAMS, "val_size": 4, "seed": seed})
        vals.append(set(read_shard(out / "val-000000.tar")))
    assert vals[0] != vals[1]


def test_bad_builder_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="openclipart-png"):
        build_openclipart_shards(tmp_path, src_root=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="animals/no_such.png"):
        build_openclipart_shards(tmp_path, files=["animals/no_such.png"])
    with pytest.raises(ValueError, match="val_size=5 leaves no training data"):
        build_openclipart_shards(tmp_path, files=subset()[:5], val_size=5)


def test_broken_png_is_skipped_and_counted_and_the_build_goes_on(tmp_path):
    # A real openclipart tree in miniature, one PNG cut in half as a bad download would be.
    names = [subset()[0], subset()[1], "recreation/music/trumpet_pocket_colour_ganso.png"]
    src = tmp_path / "openclipart"
    for name in names:
        for kind, ext in (("png", ".png"), ("svg", ".svg")):
            dest = src / kind / Path(name).with_suffix(ext)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes((ROOT / kind / Path(name).with_suffix(ext)).read_bytes())
    broken = src / "png" / names[2]
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    stats = build_openclipart_shards(
        tmp_path / "out", src_root=src, val_size=1, seed=0, image_size=32, shard_size=10, workers=1
    )
    assert stats["files"] == 3
    assert stats["skipped"] == {"broken": 1}
    assert stats["train"] + stats["val"] == 2


def test_held_out_titles_identify_their_image(tmp_path):
    # Eight stars all titled "gramastar" and eight distinct others: only the latter may be held out.
    stars = sorted(
        str(p.relative_to(ROOT / "png"))
        for p in (ROOT / "png/shapes/stars").glob("star_*pt*step.png")
    )[:8]
    others = subset()[:8]
    stats = build_openclipart_shards(tmp_path, files=stars + others, **{**PARAMS, "val_size": 6})
    assert stats["val"] == 6
    titles = {}
    for shard in sorted(tmp_path.glob("*.tar")):
        for sample in read_shard(shard).values():
            titles.setdefault(json.loads(sample["json"])["texts"][0], []).append(shard.name)
    val_titles = [t for t, where in titles.items() if any(w.startswith("val") for w in where)]
    assert len(val_titles) == 6 and all(len(titles[t]) == 1 for t in val_titles)
    assert len(titles["gramastar"]) == 8 and all(w.startswith("train") for w in titles["gramastar"])
    singles = sum(len(where) == 1 for where in titles.values())
    with pytest.raises(ValueError, match=f"val_size=9: only {singles} images have a title no"):
        build_openclipart_shards(tmp_path / "b", files=stars + others, **{**PARAMS, "val_size": 9})
