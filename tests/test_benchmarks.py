"""Benchmarks in their download layouts (ImageNet devkit and class folders, Karpathy's COCO /
Flickr30k splits, any class folder), the multi-benchmark `clippo eval`, and typographic attacks:
rendering, the wrong class, and the attack metrics."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import make_benchmarks  # noqa: E402

from clippo.data.benchmarks import (  # noqa: E402
    read_benchmark,
    read_class_folders,
    read_imagenet,
    sample_per_class,
)
from clippo.data.typographic import (  # noqa: E402
    LABEL_HEIGHT,
    TypographicAttack,
    draw_label,
    label_box,
    render_label_text,
    wrong_class,
)
from clippo.eval.benchmarks import nest_metrics, paper_table  # noqa: E402
from clippo.eval.sets import EvalSets  # noqa: E402
from clippo.eval.typographic import attack_metrics  # noqa: E402
from clippo.factory import create_model  # noqa: E402
from clippo.train.config import EvalSetConfig  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return make_benchmarks.make(tmp_path_factory.mktemp("benchmarks"))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("clippo-mu/16", image_size=32, out_dim=16).eval()


# --- readers ------------------------------------------------------------------------------


def test_devkit_labels_are_ilsvrc_ids_mapped_to_sorted_wnid_indices(bench):
    data = read_imagenet(bench / "imagenet_devkit")
    assert data.class_ids == ["n01440764", "n01443537", "n02119789"]  # sorted, leaves only
    # ILSVRC2012 id 1 is n02119789 (index 2), not index 0: the fixture's ids are unsorted.
    assert make_benchmarks.VAL_IDS == [1, 2, 3, 1, 3, 2]
    assert data.labels == [2, 0, 1, 2, 1, 0]
    assert [p.name for p in data.paths][:2] == [
        "ILSVRC2012_val_00000001.JPEG",
        "ILSVRC2012_val_00000002.JPEG",
    ]


def test_imagenet_class_folders_and_any_class_folder_with_names(bench, tmp_path):
    data = read_imagenet(bench / "imagenet_folders")  # finds val/
    assert data.labels == [0, 0, 1, 1, 2, 2] and data.classnames is None
    own = tmp_path / "own"
    shutil.copytree(bench / "imagenet_folders" / "val", own)
    (own / "classnames.txt").write_text("tench\ngoldfish\nkit fox\n")
    data = read_class_folders(own)
    assert data.classnames == ["tench", "goldfish", "kit fox"]
    assert len(set(data.keys)) == 6
    pool = sample_per_class(data, 1, seed=0)
    assert sorted(pool.labels) == [0, 1, 2]
    (own / "classnames.txt").write_text("tench\ngoldfish\n")
    with pytest.raises(ValueError, match="names 2 classes, but there are 3 class folders"):
        read_class_folders(own)


def test_karpathy_test_split_keeps_5_captions_per_image(bench):
    coco = read_benchmark("coco", bench / "coco")
    assert coco.keys == ["COCO_val2014_000000000000", "COCO_val2014_000000000001"]  # no restval
    assert [len(c["en"]) for c in coco.captions] == [5, 5]  # the 6th caption is dropped
    flickr = read_benchmark("flickr30k", bench / "flickr30k")
    assert [p.parent.name for p in flickr.image_paths] == ["flickr30k-images"] * 2


def test_wrong_layouts_name_the_missing_file_and_the_expected_layout(bench, tmp_path):
    broken = tmp_path / "devkit"
    shutil.copytree(bench / "imagenet_devkit", broken)
    (broken / "ILSVRC2012_devkit_t12/data/meta.mat").unlink()
    layout = r"(?s)not the devkit's data/meta\.mat.*devkit: .*class folders:"
    with pytest.raises(FileNotFoundError, match=layout):
        read_imagenet(broken)
    with pytest.raises(FileNotFoundError, match="class folders named by WordNet id"):
        read_imagenet(bench / "coco")
    with pytest.raises(FileNotFoundError, match="dataset_coco.json not found.*val2014"):
        read_benchmark("coco", bench / "flickr30k")
    shutil.copytree(bench / "coco", tmp_path / "coco")
    shutil.rmtree(tmp_path / "coco" / "val2014")
    with pytest.raises(FileNotFoundError, match="2 test images .* not found"):
        read_benchmark("coco", tmp_path / "coco")
    with pytest.raises(FileNotFoundError, match="no class folder with images"):
        read_class_folders(bench / "coco" / "val2014")


# --- evaluation sets on benchmarks ----------------------------------------------------------


def test_imagenet_devkit_set_zero_shot_and_ten_shot_from_a_train_folder(bench, model, tmp_path):
    evaluators = {
        "zeroshot": {"prompts": "imagenet", "templates": "a photo of a {}."},
        "fewshot": {"shots": [1], "train_data": str(bench / "imagenet_folders" / "train")},
    }
    sets = EvalSets(
        {"imagenet": EvalSetConfig(data=str(bench / "imagenet_devkit"), kind="imagenet",
                                   evaluators=evaluators)},
        batch_size=4, cache_dir=tmp_path,
    )  # fmt: skip
    results = sets.run(model)
    assert set(results) == {"imagenet/zeroshot_top1", "imagenet/zeroshot_top5",
                            "imagenet/fewshot_1shot"}  # fmt: skip
    assert sets.embedded["imagenet"].labels.tolist() == [2, 0, 1, 2, 1, 0]
    assert len(list(tmp_path.glob("classifier-*.pt"))) == 1  # cached by model and prompts
    assert sets.run(model) == results  # the cached classifier gives the same figures


def test_benchmark_kinds_get_default_evaluators_and_bad_kinds_fail(bench):
    sets = EvalSets({"coco": EvalSetConfig(data=str(bench / "coco"), kind="coco")})
    assert list(sets.sets["coco"].evaluators) == ["retrieval"]
    with pytest.raises(ValueError, match="unknown kind 'cifar'"):
        EvalSets({"x": EvalSetConfig(data=str(bench), kind="cifar")})


def test_clippo_eval_runs_several_benchmarks_into_one_table_and_json(bench, tmp_path, capsys):
    from clippo.cli import main
    from clippo.factory import create_model

    model_dir = tmp_path / "m"
    create_model("clippo-mu/16", image_size=32, out_dim=16).save_pretrained(model_dir)
    folder = tmp_path / "own"
    shutil.copytree(bench / "imagenet_folders" / "val", folder)
    (folder / "classnames.txt").write_text("tench\ngoldfish\nkit fox\n")
    out = tmp_path / "r.json"
    args = ["eval", "--model", str(model_dir), "--output", str(out), "--workers", "0",
            "--benchmark", f"coco={bench / 'coco'}",
            "--benchmark", f"flickr30k={bench / 'flickr30k'}",
            "--benchmark", f"imagefolder={folder}", "--typographic", "--fonts", "unifont",
            "--batch-size", "4", "--no-cache", "--plots", str(tmp_path / "plots")]  # fmt: skip
    assert main(args) == 0
    results = json.loads(out.read_text())
    recall = {f"{d}_recall@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}
    assert set(results) == {"coco", "flickr30k", "imagefolder"}
    assert set(results["coco"]) == recall and set(results["flickr30k"]) == recall
    assert {"zeroshot_top1", "typographic_unifont_attack_rate"} <= set(results["imagefolder"])
    printed = capsys.readouterr().out
    assert "COCO I->T R@1" in printed and "i2t_recall@1" in printed and "I1k 0-shot" not in printed
    assert "typographic attack" in printed
    assert (tmp_path / "plots" / "typographic_imagefolder.png").is_file()
    assert main(["eval", "--model", str(model_dir), "--benchmark", f"cifar={folder}"]) != 0
    assert "expected NAME=PATH, one of\n  imagenet=PATH" in capsys.readouterr().err


def test_paper_table_puts_metrics_in_the_papers_columns():
    flat = {"imagenet/zeroshot_top1": 0.5, "coco/i2t_recall@1": 0.25, "coco/t2i_recall@1": 0.125}
    lines = paper_table(nest_metrics(flat), "demo")
    head, names, _, row = lines
    cells = row.split()
    assert names.split()[:3] == ["zeroshot_top1", "fewshot_10shot", "i2t_recall@1"]
    assert cells[:4] == ["demo", "50.00", "-", "25.00"] and "12.50" in cells
    assert "Flickr" not in head


# --- typographic attacks ----------------------------------------------------------------------


def test_wrong_class_is_wrong_deterministic_and_covers_the_others():
    drawn = [wrong_class(f"img{i}", 3, 5, seed=0) for i in range(400)]
    assert 3 not in drawn and set(drawn) == {0, 1, 2, 4}
    assert drawn == [wrong_class(f"img{i}", 3, 5, seed=0) for i in range(400)]
    assert drawn != [wrong_class(f"img{i}", 3, 5, seed=1) for i in range(400)]


@pytest.mark.parametrize("font", ["unifont", "dejavu"])
def test_the_label_is_drawn_in_the_lower_half_and_nothing_else_changes(font):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    out = np.asarray(draw_label(image, "transportation", font))
    strip = render_label_text("transportation", 56, font)
    (left, top, right, bottom), _ = label_box(64, strip.shape)
    assert top >= 64 * (1 - LABEL_HEIGHT) and bottom <= 64
    changed = (out != np.asarray(image)).any(axis=2)
    assert not changed[:top].any() and not changed[bottom:].any()
    box = out[top:bottom, left:right]
    assert (box == 255).all(axis=2).mean() > 0.4  # a white label ...
    assert (box.max(axis=2) < 100).any()  # ... with dark text on it
    assert np.array_equal(out, np.asarray(draw_label(image, "transportation", font)))


def test_attack_transform_writes_the_chosen_text_per_key():
    image = Image.new("RGB", (80, 64), (255, 0, 0))
    attack = TypographicAttack(32, {"a": "dog", "b": "car"}, "unifont")
    a, b = attack(image, key="a"), attack(image, key="b")
    assert a.shape == (3, 32, 32) and not torch.equal(a, b)
    assert torch.equal(a[:, :16], b[:, :16])  # the upper half is the clean image
    with pytest.raises(KeyError, match="no attack text"):
        attack(image, key="c")
    with pytest.raises(FileNotFoundError, match="fonts-dejavu-core"):
        TypographicAttack(32, {}, "/nonexistent/font.ttf")


def test_attack_metrics_on_hand_made_embeddings():
    classifier = torch.eye(3)
    labels = torch.tensor([0, 1, 2, 0])
    written = torch.tensor([1, 2, 0, 2])
    clean = torch.eye(3)[[0, 1, 2, 1]]  # 3 of 4 right
    attacked = torch.eye(3)[[1, 1, 0, 2]]  # images 0, 2 and 3 follow the written class
    m = attack_metrics(clean, attacked, labels, written, classifier)
    assert m == pytest.approx(
        {"clean_top1": 0.75, "top1": 0.25, "attack_rate": 0.75, "clean_written_rate": 0.0}
    )
    with pytest.raises(ValueError, match="must write a wrong one"):
        attack_metrics(clean, attacked, labels, labels, classifier)
