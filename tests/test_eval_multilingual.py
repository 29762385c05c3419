"""Per-language retrieval (XM3600 protocol) and bitext retrieval, hand-checked on 2-D embeddings;
the evaluator on a caption set in XM3600's layout, end to end, and the per-language plot; the
bitext evaluator on held-out text pairs (``kind: textpairs``), hand-checked."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import clippo
from clippo.cli import main
from clippo.eval import retrieval_ranks
from clippo.eval.multilingual import multilingual_retrieval_metrics
from clippo.eval.plots import per_language_values, plot_per_language_recall
from clippo.eval.sets import EvalSets
from clippo.schema import ConfigError
from clippo.train.config import EvalSetConfig

XM3600 = Path(__file__).parent / "fixtures" / "xm3600"


def _at(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


# Images at 0, 90 and 180 degrees; captions as (image, language, vector). Scores are cosines of
# the angle between two vectors, so every rank below is read off the angles.
IMAGES = [_at(0), _at(90), _at(180)]
CAPTIONS = [
    (0, "en", _at(100)),  # e0a: nearer image 1 than its own image 0
    (0, "en", _at(10)),  # e0b
    (1, "en", _at(60)),  # e1
    (2, "en", _at(170)),  # e2
    (0, "fr", _at(0)),  # f0
    (1, "fr", _at(90)),  # f1
    (2, "fr", _at(95)),  # f2: nearer image 1 (cos 5) than its own image 2 (cos 85)
    (0, "de", [1.0, 1.0]),  # d0 at exactly 45 degrees: ties images 0 and 1
    (1, "de", _at(50)),  # d1 (image 2 has no German caption)
]


def _metrics(captions=CAPTIONS, images=IMAGES, **kw):
    return multilingual_retrieval_metrics(
        torch.tensor(images),
        torch.tensor([v for _, _, v in captions]),
        torch.tensor([i for i, _, _ in captions]),
        [lang for _, lang, _ in captions],
        ks=(1, 2),
        **kw,
    )


def test_per_language_recall_hand_counted():
    m = _metrics()
    # en, image->text. Image 0: own e0b (cos 10) is its best text -> rank 0. Image 1: own e1
    # (cos 30) loses to e0a (cos 10) -> rank 1. Image 2: own e2 (cos 10) -> rank 0.
    assert m["en/i2t_recall@1"] == pytest.approx(2 / 3)
    assert m["en/i2t_recall@2"] == 1.0
    # en, text->image (every caption a query). e0a: images 1 (cos 10) and 2 (cos 80) beat its
    # image 0 (cos 100) -> rank 2; e0b, e1, e2 -> rank 0.
    assert m["en/t2i_recall@1"] == pytest.approx(3 / 4)
    assert m["en/t2i_recall@2"] == pytest.approx(3 / 4)
    # fr: every image's own caption is its best (f2 is cos 85 from image 2, f1 and f0 cos 90
    # and 180); f2 retrieves image 1 first -> t2i rank 1.
    assert (m["fr/i2t_recall@1"], m["fr/t2i_recall@1"]) == (1.0, pytest.approx(2 / 3))
    assert m["fr/t2i_recall@2"] == 1.0
    # de: only images 0 and 1 have German captions, so only they are candidates. d0 scores
    # both the same: a tie counts as a miss (rank 1). d1 (cos 40 to image 1, 50 to image 0).
    assert m["de/images"] == 2 and m["en/images"] == 3
    assert m["de/i2t_recall@1"] == 1.0
    assert (m["de/t2i_recall@1"], m["de/t2i_recall@2"]) == (0.5, 1.0)
    assert m["mean/i2t_recall@1"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert m["mean/t2i_recall@1"] == pytest.approx((3 / 4 + 2 / 3 + 1 / 2) / 3)
    assert m["languages"] == 3


def test_bitext_recall_hand_counted():
    m = _metrics()
    # fr -> en among all four English captions (e0a 100, e0b 10, e1 60, e2 170 degrees).
    # f0 (0): best is its own e0b (cos 10) -> rank 0. f1 (90): e0a (cos 10) beats its own e1
    # (cos 30) -> rank 1. f2 (95): e0a (cos 5) and e1 (cos 35) beat its own e2 (cos 75) -> 2.
    assert m["fr/bitext_recall@1"] == pytest.approx(1 / 3)
    assert m["fr/bitext_recall@2"] == pytest.approx(2 / 3)
    # de: d0 (45): e1 (cos 15) beats its best own, e0b (cos 35) -> rank 1; d1 (50): own e1
    # (cos 10) first -> rank 0. Image 0's two English captions: the better one counts.
    assert (m["de/bitext_recall@1"], m["de/bitext_recall@2"]) == (0.5, 1.0)
    assert "en/bitext_recall@1" not in m  # the pivot does not retrieve itself
    assert m["mean/bitext_recall@1"] == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_bitext_skips_queries_whose_image_has_no_pivot_caption():
    # Image 3 has a French caption only: it counts for French image<->text, not for bitext.
    m = _metrics(CAPTIONS + [(3, "fr", _at(270))], IMAGES + [_at(270)])
    assert m["fr/images"] == 4
    assert m["fr/bitext_recall@1"] == pytest.approx(1 / 3)


def test_language_selection_and_no_bitext():
    m = _metrics(languages=["de"], bitext=False)
    assert m["languages"] == 1 and m["mean/t2i_recall@1"] == 0.5
    assert not any("bitext" in k or k.startswith(("en/", "fr/")) for k in m)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"no captions in language\(s\) \['ko'\]"):
        _metrics(languages=["ko"])
    with pytest.raises(ValueError, match="pivot language 'xx'"):
        _metrics(pivot="xx")
    with pytest.raises(ValueError, match="9 text embeddings but 8 languages"):
        multilingual_retrieval_metrics(
            torch.tensor(IMAGES),
            torch.tensor([v for _, _, v in CAPTIONS]),
            torch.tensor([i for i, _, _ in CAPTIONS]),
            ["en"] * 8,
        )


def test_retrieval_ranks_groups_and_ties():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    candidates = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    # Query 2 scores 1 against all three: its own (group 0) ties both others -> rank 2.
    ranks = retrieval_ranks(queries, candidates, torch.tensor([0, 1, 0]), torch.tensor([0, 1, 1]))
    assert ranks.tolist() == [0, 0, 2]
    with pytest.raises(ValueError, match="1 queries have no correct candidate"):
        retrieval_ranks(queries, candidates, torch.tensor([0, 1, 5]), torch.tensor([0, 1, 1]))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    model = clippo.create_model("clippo-mu/16", image_size=32, out_dim=16).eval()
    path = tmp_path_factory.mktemp("model") / "model"
    clippo.save_pretrained(model, path)
    return model, path


def _sets(data, evaluators):
    return EvalSets({"xm": EvalSetConfig(data=str(data), evaluators=evaluators)}, batch_size=2)


def test_evaluator_on_a_caption_set_in_xm3600_layout(tiny_model):
    sets = _sets(XM3600, {"multilingual": {"ks": [1, 2]}, "retrieval": {}})
    out = sets.run(tiny_model[0])
    embedded = sets.embedded["xm"]
    # 3 images; en has 2 + 1 + 1 captions, fr 3, ja 2 (the third image's list is empty).
    assert embedded.keys == ["000411001ff7dd4f", "00084b63d3d9d1b7", "0009cd30dfef5a52"]
    assert sorted(embedded.text_languages) == ["en"] * 4 + ["fr"] * 3 + ["ja"] * 2
    assert (out["xm/en/images"], out["xm/ja/images"], out["xm/languages"]) == (3, 2, 3)
    for lang in ("fr", "ja"):
        assert 0 <= out[f"xm/{lang}/bitext_recall@1"] <= 1
    assert "xm/i2t_recall@1" in out  # the plain evaluator pools every language's captions
    assert per_language_values(out, "t2i_recall@2").keys() == {"en", "fr", "ja"}


def test_multilingual_evaluator_refuses_shards(openclipart_small):
    out, stats = openclipart_small
    with pytest.raises(ConfigError, match="evaluators.multilingual: needs captions per language"):
        _sets(out / stats["val_pattern"], {"multilingual": {}})


def test_per_language_plot_writes_a_png(tmp_path):
    runs = {"a": _metrics(), "b": _metrics(bitext=False)}
    path = plot_per_language_recall(runs, tmp_path / "p.png", chance={"t2i": 1 / 3})
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="no per-language recall@5"):
        plot_per_language_recall(runs, tmp_path / "q.png", k=5)


def test_cli_eval_multilingual_writes_metrics_and_plot(tiny_model, tmp_path, capsys):
    code = main(
        ["eval", "multilingual", "--model", str(tiny_model[1]), "--data", str(XM3600),
         "--out", str(tmp_path), "--ks", "1", "5", "--batch-size", "2"]
    )  # fmt: skip
    assert code == 0
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["metrics"]["xm3600/languages"] == 3
    assert (tmp_path / "recall_at_1.png").is_file()
    printed = capsys.readouterr().out
    assert "bitext_recall@5" in printed and "\nmean " in printed
    assert main(["eval"]) == 2  # the plain form still needs --model
    assert "--model is required" in capsys.readouterr().err


# Held-out text pairs (kind: textpairs) and the bitext evaluator. Pivots (text_a) at 0, 90, 180
# degrees; each text_b's angle is chosen so its rank is read off the angles.
PAIR_VECTORS = {
    "cat": _at(0), "dog": _at(90), "house": _at(180),
    "chat": _at(10),  # nearest its pivot cat -> hit
    "Katze": _at(80),  # cat's, but dog (10 degrees) is nearer than cat (80) -> rank 1
    "chien": _at(95),  # dog's -> hit
    "maison": _at(130),  # house's (50 degrees), but dog is nearer (40) -> rank 1
}  # fmt: skip
PAIRS = [("cat", "chat"), ("cat", "Katze"), ("dog", "chien"), ("house", "maison")]
# The queries drawn after one leading space (the bitext evaluator's leading_spaces), 45 degrees on.
SHIFTED_VECTORS = {
    " chat": _at(55),  # dog (35 degrees) nearer than cat (55) -> rank 1
    " Katze": _at(125),  # dog 35, house 55, cat 125 -> rank 2
    " chien": _at(140),  # house 40 nearer than dog 50 -> rank 1
    " maison": _at(175),  # house 5 -> hit
}  # fmt: skip


class _TableModel(torch.nn.Module):
    """encode_text from a table, counting what it was asked to embed."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))
        self.embedded: list[str] = []

    def encode_text(self, texts, batch_size=256):
        self.embedded.extend(texts)
        return torch.tensor([(PAIR_VECTORS | SHIFTED_VECTORS)[t] for t in texts])


def _pair_set(tmp_path, pairs=PAIRS, languages=None):
    from clippo.data.build.textpairs import write_text_pair_shards

    write_text_pair_shards(pairs, tmp_path, source="translation", shard_size=3, languages=languages)
    return str(tmp_path / "train-*.tar")  # 2 shards


def test_read_text_pair_set_keeps_each_pivot_once(tmp_path):
    from clippo.data.textpairs import read_text_pair_set

    data = read_text_pair_set(_pair_set(tmp_path))
    assert len(data) == 4 and sorted(data.pivots) == ["cat", "dog", "house"]  # cat: one row
    got = sorted((data.pivots[t], q) for q, t in zip(data.queries, data.targets, strict=True))
    assert got == sorted(PAIRS)
    with pytest.raises(FileNotFoundError):
        read_text_pair_set(str(tmp_path / "none-*.tar"))


def test_bitext_evaluator_on_held_out_pairs_hand_counted(tmp_path):
    pattern = _pair_set(tmp_path)
    dev = EvalSetConfig(data=pattern, kind="textpairs", evaluators={"bitext": {"ks": [1, 2]}})
    sets = EvalSets({"dev": dev}, batch_size=3)
    model = _TableModel()
    out = sets.run(model)
    # text_b -> text_a among the 3 distinct pivots: chat, chien hit; Katze, maison at rank 1.
    assert out["dev/b2a_recall@1"] == pytest.approx(0.5)
    assert out["dev/b2a_recall@2"] == pytest.approx(1.0)
    # text_a -> any of its text_b: cat's best is chat (10 degrees, nothing else nearer), dog's
    # chien (5; Katze is 10 away), house's maison (50; chien 85) -> all at rank 0.
    assert out["dev/a2b_recall@1"] == pytest.approx(1.0)
    assert (out["dev/pairs"], out["dev/pivots"]) == (4, 3)
    assert sorted(model.embedded) == sorted(PAIR_VECTORS)  # each distinct string once
    assert "dev/mean/b2a_recall@1" not in out  # these pairs carry no language


def test_bitext_evaluator_per_language_and_their_mean(tmp_path):
    pattern = _pair_set(tmp_path, languages=["fr", "de", "fr", "fr"])  # Katze: de
    dev = EvalSetConfig(data=pattern, kind="textpairs", evaluators={"bitext": {"ks": [1, 2]}})
    out = EvalSets({"dev": dev}).run(_TableModel())
    # fr: chat and chien hit, maison at rank 1 -> 2/3; de: Katze at rank 1 -> 0.
    assert out["dev/fr/b2a_recall@1"] == pytest.approx(2 / 3)
    assert out["dev/de/b2a_recall@1"] == 0.0
    assert out["dev/mean/b2a_recall@1"] == pytest.approx(1 / 3)  # languages weigh the same
    assert out["dev/b2a_recall@1"] == pytest.approx(0.5)  # pairs weigh the same
    assert out["dev/mean/b2a_recall@2"] == 1.0
    assert (out["dev/languages"], out["dev/fr/pairs"], out["dev/de/pairs"]) == (2, 3, 1)
    with pytest.raises(ValueError, match="3 languages for 4 pairs: give one per pair"):
        _pair_set(tmp_path / "bad", languages=["fr", "de", "fr"])


def test_bitext_evaluator_with_leading_spaces_hand_counted(tmp_path):
    pattern = _pair_set(tmp_path, languages=["fr", "de", "fr", "fr"])
    options = {"ks": [1, 2], "leading_spaces": [1]}
    dev = EvalSetConfig(data=pattern, kind="textpairs", evaluators={"bitext": options})
    model = _TableModel()
    out = EvalSets({"dev": dev}).run(model)
    assert out["dev/b2a_recall@1"] == pytest.approx(0.5)  # as without the option
    # One space: maison hits, chat and chien at rank 1, Katze at rank 2.
    assert out["dev/spaces1/b2a_recall@1"] == pytest.approx(1 / 4)
    assert out["dev/spaces1/b2a_recall@2"] == pytest.approx(3 / 4)
    assert out["dev/spaces1/mean/b2a_recall@1"] == pytest.approx((1 / 3 + 0) / 2)  # fr, de
    assert out["dev/spaces1/mean/b2a_recall@2"] == pytest.approx((3 / 3 + 0) / 2)
    # spaces_mean: over no spaces and one space.
    assert out["dev/spaces_mean/b2a_recall@1"] == pytest.approx((0.5 + 0.25) / 2)
    assert out["dev/spaces_mean/mean/b2a_recall@1"] == pytest.approx((1 / 3 + 1 / 6) / 2)
    assert out["dev/spaces_mean/mean/b2a_recall@2"] == pytest.approx((1.0 + 0.5) / 2)
    assert not any(k.startswith("dev/spaces1/fr/") for k in out)  # means only, shifted
    assert sorted(t for t in model.embedded if t.startswith(" ")) == sorted(SHIFTED_VECTORS)
    for bad in ([0], [-2]):
        evaluators = {"bitext": {"leading_spaces": bad}}
        with pytest.raises(ValueError, match="leading_spaces: counts must be ints >= 1"):
            EvalSets({"dev": EvalSetConfig(data=pattern, kind="textpairs", evaluators=evaluators)})


def test_textpairs_sets_and_the_bitext_evaluator_go_together(tmp_path, openclipart_small):
    pattern = _pair_set(tmp_path)
    with pytest.raises(ConfigError, match="evaluators.retrieval: a textpairs set has no images"):
        EvalSets(
            {"dev": EvalSetConfig(data=pattern, kind="textpairs", evaluators={"retrieval": {}})}
        )
    out, stats = openclipart_small
    with pytest.raises(ConfigError, match="evaluators.bitext: needs held-out text pairs: set "
                       r"eval.sets.dev.kind: textpairs"):  # fmt: skip
        EvalSets(
            {"dev": EvalSetConfig(data=str(out / stats["val_pattern"]), evaluators={"bitext": {}})}
        )
    with pytest.raises(ValueError, match="no text pairs in"):  # image shards are not pairs
        EvalSets({"dev": EvalSetConfig(data=str(out / stats["val_pattern"]), kind="textpairs",
                                       evaluators={"bitext": {}})})  # fmt: skip


def test_multilingual_compare_script_counts_languages_and_a_rerun(tmp_path):
    """scripts/multilingual_compare.py on hand-made metrics: the co-trained languages only,
    the means, and with --rerun which languages each run lifts above the base."""
    import subprocess
    import sys

    def write(name, values):
        metrics = {f"tuxpaint/{lang}/bitext_recall@1": v for lang, v in values.items()}
        (tmp_path / name).write_text(json.dumps({"metrics": metrics}))
        return str(tmp_path / name)

    base = write("base.json", {"fr": 0.01, "de": 0.02, "ko": 0.00, "shs": 0.5})
    run = write("run.json", {"fr": 0.03, "de": 0.02, "ko": 0.01, "shs": 0.0})
    again = write("again.json", {"fr": 0.02, "de": 0.04, "ko": 0.00, "shs": 0.0})
    (tmp_path / "stats.json").write_text(
        json.dumps({"pairs_per_language": {"fr": 1, "de": 1, "ko": 1}})
    )
    script = Path(__file__).parents[1] / "scripts" / "multilingual_compare.py"
    out = subprocess.run(
        [sys.executable, str(script), base, run, "--pairs", str(tmp_path / "stats.json"),
         "--rerun", again],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "| fr | 1.00 | 3.00 | +2.00 |" in out and "shs" not in out
    assert "3 languages: mean 1.00 -> 2.00 (2.0x, +1.00 points); the run is higher in 2 of 3" in out
    assert "above the base in both: 1 (fr)" in out
    assert "above the base in run only: 1 (ko)" in out
    assert "above the base in rerun only: 1 (de)" in out
    assert "above the base in neither: 0" in out
    assert "|run - rerun| per language: median 1.00, largest 2.00 points" in out


def test_encode_texts_embeds_each_distinct_string_once_in_order():
    from clippo.eval.sets import encode_texts

    model = _TableModel()
    texts = ["chat", " chat", "chien", "chat", " chat"]
    got = encode_texts(model, texts)
    assert model.embedded == ["chat", " chat", "chien"]
    assert torch.equal(got, torch.tensor([(PAIR_VECTORS | SHIFTED_VECTORS)[t] for t in texts]))
