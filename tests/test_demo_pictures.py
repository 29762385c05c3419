"""What the demo and `clippo search` show a person: held-out recall in the training curves, a
search contact sheet with hits marked, a user's folder searched with broken files skipped."""

import shutil

import numpy as np
import pytest
import torch
from helpers import tiny_run_tree
from PIL import Image

import clippo.jobs.demo as demo
from clippo.cli import main
from clippo.jobs.pretrain import build_eval_sets, train
from clippo.jobs.search import embed_image_files, image_files
from clippo.train.config import load_config

PNGS = "/usr/share/openclipart/png/food/fruit"


pytestmark = pytest.mark.usefixtures("one_thread")


def test_demo_report_has_held_out_curves_and_a_search_sheet(
    openclipart_small, tmp_path, monkeypatch
):
    tree = tiny_run_tree(openclipart_small, captions="first", train_examples=40)
    tree["eval"]["sets"]["val"]["every"] = 2
    tree["train"] = {"total_steps": 4, "log_every": 1, "ckpt_every": 4, "precision": "fp32"}
    cfg = load_config(tree)
    sets = build_eval_sets(cfg)
    results = train(cfg, tmp_path, evaluation=sets)
    drawn = {}
    monkeypatch.setattr(
        demo, "plot_search", lambda q, rows, out: drawn.update(q=q, rows=rows) or out
    )
    written = demo.write_report(cfg, tmp_path, demo.final_results(results, sets, tmp_path), sets)
    assert [p.name for p in written] == ["metrics.json", "training_curves.png", "search.png"]
    assert Image.open(tmp_path / "training_curves.png").size[0] > 1500  # five panels
    assert drawn["q"] == list(demo.DEMO_QUERIES) and all(len(r) == 6 for r in drawn["rows"])
    image, caption, hit = drawn["rows"][0][0]
    assert image.ndim == 3 and isinstance(caption, str) and hit in (True, False)
    # A hit is a caption naming the query's word, as a word (plurals too).
    assert demo._is_hit("car", ["Red cars on a road"]) and not demo._is_hit("car", ["a cart"])


def test_search_folder_ranks_images_and_skips_broken_files(tmp_path, capsys):
    from clippo.factory import create_model
    from clippo.models import save_pretrained

    folder = tmp_path / "pics"
    (folder / "sub").mkdir(parents=True)
    sources = sorted(p for p in __import__("pathlib").Path(PNGS).glob("*.png"))[:5]
    for i, src in enumerate(sources):
        shutil.copy(src, (folder / "sub" if i % 2 else folder) / src.name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (folder / "notes.txt").write_text("not an image")
    assert len(image_files(folder)) == 6  # recursive, by suffix
    torch.manual_seed(0)
    model = create_model("clippo-mu/16", image_size=32, out_dim=16).eval()
    emb, kept, skipped = embed_image_files(model, image_files(folder), batch_size=2)
    assert emb.shape == (5, 16) and len(kept) == 5 and list(skipped) == [str(folder / "broken.png")]
    np.testing.assert_allclose(emb.norm(dim=1).numpy(), 1.0, rtol=1e-5)
    save_pretrained(model, tmp_path / "m")
    args = ["search", "an apple", "a banana", "--model", str(tmp_path / "m"), "--images",
            str(folder), "--top", "3", "--out", str(tmp_path / "s.png")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count(".png (") == 6 and "skipped 1 unreadable files" in out
    assert Image.open(tmp_path / "s.png").size[0] > 0
    assert (
        main(["search", "x", "--model", str(tmp_path / "m"), "--images", str(tmp_path / "no")]) == 2
    )
