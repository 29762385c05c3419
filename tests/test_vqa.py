"""VQA: the shard builders (easy-vqa, VQAv2's official layout), soft targets, the fused
protocol's reader, model, optimizer and lr grid on the engine, evaluation and zero-shot VQA."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from clippo.cli import main
from clippo.data.build.vqa import (
    answer_vocabulary,
    build_vqa_shards,
    holdout_by_image,
    read_easy_vqa,
    read_vqav2,
    soft_targets,
)
from clippo.data.shards import expand_urls, iter_tar_samples, write_shard
from clippo.data.transforms import load_image
from clippo.data.vqa import (
    VQAShardDataset,
    fused_input,
    iter_questions,
    question_prior,
    read_question_prior,
    read_vocabulary,
    split_pattern,
)
from clippo.eval.vqa import baselines, split_records
from clippo.extras import MissingExtraError
from clippo.factory import create_model
from clippo.jobs.vqa import evaluate_vqa, finetune_vqa
from clippo.models import from_pretrained, save_pretrained
from clippo.models.heads import VQAClassifier, VQAClassifierConfig, image_tower
from clippo.render import UnifontRenderer
from clippo.train.config import load_config, resolve_config
from clippo.train.optim import build_optimizer
from clippo.train.tasks import resize_vit

FIXTURE = Path(__file__).parent / "fixtures" / "vqav2"  # scripts/make_vqav2_layout_fixture.py


@pytest.fixture(scope="module")
def vqav2_shards(tmp_path_factory):
    """The layout fixture as shards: every answer in the vocabulary, 1 of 4 images held out."""
    out = tmp_path_factory.mktemp("vqav2_shards")
    stats = build_vqa_shards(f"vqav2:{FIXTURE}", out, min_count=1, holdout=0.25, shard_size=3)
    return out, stats


def _records(urls: str) -> list[dict]:
    return [json.loads(s["json"]) for url in expand_urls(urls) for s in iter_tar_samples(url)]


# -- readers and builders -------------------------------------------------------------------


def test_vqav2_reader_reads_the_official_layout():
    questions = read_vqav2(FIXTURE, "train2014")
    assert [q.question_id for q in questions] == [90, 91, 250, 251, 300, 301, 420, 421]
    q = questions[3]
    assert (q.image_id, q.question, q.answer_type, q.question_type) == (
        25,
        "How many squares?",
        "number",
        "how many",
    )
    assert q.answers == ["1"] * 4 + ["one"] * 4 + ["2", "1"]  # ends stripped, as the metric does
    assert q.image == FIXTURE / "train2014" / "COCO_train2014_000000000025.jpg"
    assert q.majority == "1"


def test_vqav2_reader_names_a_missing_file(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "v", dirs_exist_ok=True)
    (tmp_path / "v" / "v2_OpenEnded_mscoco_train2014_questions.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"v2_OpenEnded_mscoco_train2014_questions.json"):
        read_vqav2(tmp_path / "v", "train2014")


def test_vocabulary_keeps_answers_seen_min_count_times():
    questions = read_vqav2(FIXTURE, "train2014")
    assert answer_vocabulary(questions, 1) == [
        ("no", 2),
        ("1", 1),
        ("blue", 1),
        ("gray", 1),
        ("green", 1),
        ("red", 1),
        ("yes", 1),
    ]
    assert answer_vocabulary(questions, 2) == [("no", 2)]
    with pytest.raises(ValueError, match="min_count must be >= 1"):
        answer_vocabulary(questions, 0)


def test_soft_targets_are_the_official_vqa_scores():
    vocab = {"1", "2", "no", "yes", "green", "gray"}
    # Humans disagree, so all are normalised ("one" -> "1"): 9 say 1, one says 2.
    assert soft_targets(["1"] * 4 + ["one"] * 4 + ["2", "1 "], vocab) == {"1": 1.0, "2": 0.3}
    assert soft_targets(["no"] * 7 + ["yes"] * 3, vocab) == {"no": 1.0, "yes": 0.9}
    assert soft_targets(["green"] * 8 + ["dark green", "Green."], vocab) == {"green": 1.0}
    assert soft_targets(["gray"] * 5 + ["grey"] * 5, vocab) == {"gray": 1.0}
    assert soft_targets(["navy"] * 10, vocab) == {}


def test_holdout_splits_by_image_and_is_seeded():
    questions = read_vqav2(FIXTURE, "train2014")
    train, held = holdout_by_image(questions, 0.25, seed=0)
    assert sorted(train + held) == list(range(len(questions)))
    assert len(held) == 2 and len({questions[i].image_id for i in held}) == 1
    assert not {questions[i].image_id for i in held} & {questions[i].image_id for i in train}
    assert holdout_by_image(questions, 0.25, seed=0) == (train, held)
    with pytest.raises(ValueError, match=r"holdout must lie in \[0, 1\)"):
        holdout_by_image(questions, 1.0, seed=0)


def test_shards_hold_questions_targets_and_the_vocabulary(vqav2_shards):
    out, stats = vqav2_shards
    assert (stats["train"], stats["holdout"], stats["test"]) == (6, 2, 3)
    assert stats["skipped"] == {}
    assert read_vocabulary(out).answers == ["no", "1", "blue", "gray", "green", "red", "yes"]
    records = {r["question_id"]: r for r in _records(split_pattern(out, "test"))}
    assert sorted(records) == [70, 71, 80]
    assert records[80]["targets"] == {"1": 1.0}
    assert records[80]["answer_type"] == "number" and len(records[80]["answers"]) == 10
    train = _records(split_pattern(out, "train")) + _records(split_pattern(out, "holdout"))
    assert {r["question_id"]: r["targets"] for r in train}[421] == {"no": 1.0, "yes": 0.9}


def test_missing_and_broken_images_are_skipped_and_counted(tmp_path):
    root = tmp_path / "v"
    shutil.copytree(FIXTURE, root)
    (root / "train2014" / "COCO_train2014_000000000009.jpg").unlink()
    (root / "train2014" / "COCO_train2014_000000000025.jpg").write_bytes(b"not a jpeg")
    stats = build_vqa_shards(f"vqav2:{root}", tmp_path / "out", min_count=1, holdout=0.0)
    assert stats["skipped"] == {"train": {"broken": 2, "missing_image": 2}}
    assert stats["train"] == 4


def test_unknown_source_and_missing_folder_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown VQA source 'vqa3:x': give easy-vqa or vqav2"):
        build_vqa_shards("vqa3:x", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"VQAv2 folder .*nowhere not found"):
        build_vqa_shards(f"vqav2:{tmp_path / 'nowhere'}", tmp_path)


def test_easy_vqa_questions_score_by_exact_match():
    questions = read_easy_vqa("test")
    assert len(questions) == 9673
    q = questions[0]
    assert len(q.answers) == 10 and len(set(q.answers)) == 1  # one answer, ten "annotators"
    assert q.question_type == " ".join(q.question.split()[:2])
    assert q.answer_type == ("yes/no" if q.answers[0] in ("yes", "no") else "other")
    assert q.image.is_file()


def test_easy_vqa_without_the_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "easy_vqa", None)
    with pytest.raises(MissingExtraError, match=r"easy-vqa: pip install 'clippo\[vqa\]'"):
        read_easy_vqa("train")


# -- the reader, the model, the optimizer ---------------------------------------------------


def test_every_vqa_reader_skips_the_same_damaged_samples(vqav2_shards, tmp_path):
    out, _ = vqav2_shards
    good = [s for url in expand_urls(split_pattern(out, "test")) for s in iter_tar_samples(url)]
    a, b, c = good  # three questions: 70, 71, 80
    members = [("a.jpg", a["jpg"]), ("a.json", a["json"])]
    members += [("cut.jpg", b["jpg"][: len(b["jpg"]) // 2]), ("cut.json", b["json"])]
    members += [("noimage.json", c["json"])]
    members += [("badjson.jpg", c["jpg"]), ("badjson.json", b"{not json")]
    members += [("noquestion.jpg", c["jpg"]), ("noquestion.json", b'{"question_id": 5}')]
    members += [("c.jpg", c["jpg"]), ("c.json", c["json"])]
    shard = tmp_path / "damaged-000000.tar"
    write_shard(shard, members)
    ids = [json.loads(x["json"])["question_id"] for x in (a, c)]
    data = VQAShardDataset(
        str(shard),
        vocabulary=read_vocabulary(out),
        renderer=UnifontRenderer(),
        image_size=48,
        max_lines=2,
        batch_size=8,
        train=False,
    )
    batch = next(iter(data))
    assert batch["question_id"] == ids
    assert batch["skip_reasons"] == {"broken": 1, "no_image": 1, "bad_json": 1, "no_question": 1}
    # Scoring a results file and the question prior read the questions the model was shown.
    assert [r["question_id"] for r in split_records(str(shard))] == ids
    assert [m["question_id"] for m in iter_questions(str(shard))] == ids


def test_reader_draws_the_question_above_the_image(vqav2_shards):
    out, _ = vqav2_shards
    renderer = UnifontRenderer()
    data = VQAShardDataset(
        split_pattern(out, "test"),
        vocabulary=read_vocabulary(out),
        renderer=renderer,
        image_size=48,
        max_lines=2,
        batch_size=8,
        train=False,
    )
    batch = next(iter(data))
    assert batch["image"].shape == (3, 3, 48, 48) and batch["target"].shape == (3, 7)
    raw = next(s for s in iter_tar_samples(expand_urls(split_pattern(out, "test"))[0]))
    meta = json.loads(raw["json"])
    i = batch["question_id"].index(meta["question_id"])
    expected = fused_input(renderer, load_image(raw["jpg"]), meta["question"], 48, 2)
    torch.testing.assert_close(batch["image"][i], expected, rtol=0, atol=0)
    assert batch["target"][i].tolist() == read_vocabulary(out).targets(meta["targets"]).tolist()


def test_resize_vit_resamples_the_position_embedding():
    vit = create_model("clippo-mu/16", image_size=32).image
    big = resize_vit(vit, 48)
    assert big.pos_embed.shape == (1, 9, vit.cfg.width) and big.cfg.image_size == 48
    torch.testing.assert_close(big.pos_embed[0, 0], vit.pos_embed[0, 0])  # corners kept
    torch.testing.assert_close(big.blocks[0].mlp.fc1.weight, vit.blocks[0].mlp.fc1.weight)
    assert resize_vit(vit, 32) is vit


def test_vqa_classifier_round_trips_through_a_model_directory(tmp_path):
    tower = image_tower(create_model("clippo-mu/16", image_size=32))
    model = VQAClassifier(tower, VQAClassifierConfig(answers=["yes", "no", "2"], max_lines=1))
    nn.init.normal_(model.head.weight)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    loaded = from_pretrained(save_pretrained(model, tmp_path / "m"))
    assert isinstance(loaded, VQAClassifier) and loaded.answers == ["yes", "no", "2"]
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert loaded.cfg.image_size == 32 and loaded.cfg.max_lines == 1


def test_image_tower_refuses_a_model_without_one():
    with pytest.raises(ValueError, match="Linear has no image tower"):
        image_tower(nn.Linear(2, 2))


def test_sgd_momentum_matches_torch_and_head_lr_is_multiplied():
    torch.manual_seed(0)
    ours, ref = nn.Linear(3, 2), nn.Linear(3, 2)
    ref.load_state_dict(ours.state_dict())
    opt, _ = build_optimizer(
        ours, name="sgd", lr=0.1, wd=0.0, schedule=lambda s: 1.0, grad_clip_norm=None
    )
    torch_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for step in range(3):
        x = torch.randn(4, 3, generator=torch.Generator().manual_seed(step))
        for model, o in ((ours, opt), (ref, torch_opt)):
            o.zero_grad()
            model(x).pow(2).sum().backward()
            o.step()
    torch.testing.assert_close(ours.weight, ref.weight)

    model = nn.Sequential()
    model.add_module("tower", nn.Linear(3, 3))
    model.add_module("head", nn.Linear(3, 2))
    opt, _ = build_optimizer(
        model, name="sgd", lr=0.1, wd=0.0, schedule=lambda s: 1.0, lr_mults={r"head\..*": 10}
    )
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lrs[id(model.head.weight)] == pytest.approx(1.0)
    assert lrs[id(model.tower.weight)] == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"lr_mults: \['heads'\] match no trainable parameter"):
        build_optimizer(model, lr=0.1, wd=0.0, schedule=lambda s: 1.0, lr_mults={"heads": 2})


# -- the fused protocol on the engine, evaluation, zero-shot ----------------------------------


def _tiny_cfg(data: Path, **extra):
    sets = {
        "finetune.data": data,
        "model.name": "clippo-mu/16",
        "model.options.image_size": 32,
        "finetune.max_lines": 1,
        "finetune.lrs": "[0.03, 0.1]",
        "data.batch_size": 4,
        "data.workers": 0,
        "data.shuffle_buffer": 4,
        "train.total_steps": 4,
        "train.ckpt_every": 2,
        "train.log_every": 1,
        "train.precision": "fp32",
        "eval.batch_size": 4,
    } | extra
    return load_config(resolve_config("vqa_fused"), [f"{k}={v}" for k, v in sets.items()])


def test_fused_protocol_picks_the_lr_on_holdout_and_scores_test_once(
    vqav2_shards, tmp_path, one_thread
):
    out, _ = vqav2_shards
    report = finetune_vqa(_tiny_cfg(out), tmp_path / "run")
    assert [r["lr"] for r in report["runs"]] == [0.03, 0.1]
    best = max(report["runs"], key=lambda r: r["holdout"]["vqa_accuracy"])
    assert report["best_lr"] == best["lr"] and report["runs"][0]["holdout"]["questions"] == 2
    assert report["num_questions"] == 3 and set(report["per_answer_type"]) == {
        "yes/no",
        "other",
        "number",
    }
    base = report["baselines"]  # the blind prior, and how often the model answers as it does
    assert base["question_prior"] == 1.0 and 0.0 <= base["same_as_prior"] <= 1.0
    results = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert sorted(r["question_id"] for r in results) == [70, 71, 80]
    assert all(set(r) == {"question_id", "answer"} for r in results)
    assert (
        json.loads((tmp_path / "run" / "metrics.json").read_text())["overall"] == report["overall"]
    )
    model = from_pretrained(report["model"])
    assert isinstance(model, VQAClassifier) and model.cfg.image_size == 32
    # The same model scored by `clippo eval vqa`'s function gives the same figures.
    again = evaluate_vqa(report["model"], out, tmp_path / "eval")
    assert again["overall"] == report["overall"]
    # A finished grid is read back, not trained again.
    mtime = (tmp_path / "run" / "lr_0.03" / "model" / "model.safetensors").stat().st_mtime
    finetune_vqa(_tiny_cfg(out), tmp_path / "run")
    assert (tmp_path / "run" / "lr_0.03" / "model" / "model.safetensors").stat().st_mtime == mtime


def test_an_interrupted_fused_run_resumes_to_the_same_weights(vqav2_shards, tmp_path, one_thread):
    out, _ = vqav2_shards
    cfg = _tiny_cfg(out, **{"finetune.lrs": "[0.1]"})
    finetune_vqa(cfg, tmp_path / "straight")

    def stop(lr, step, metrics):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune_vqa(cfg, tmp_path / "cut", on_step=stop)
    assert (tmp_path / "cut" / "lr_0.1" / "checkpoints").is_dir()
    finetune_vqa(cfg, tmp_path / "cut")
    a = from_pretrained(tmp_path / "straight" / "lr_0.1" / "model").state_dict()
    b = from_pretrained(tmp_path / "cut" / "lr_0.1" / "model").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_zero_shot_reports_chance_and_majority(vqav2_shards, tmp_path, one_thread):
    out, _ = vqav2_shards
    model_dir = save_pretrained(create_model("clippo-mu/16", image_size=32), tmp_path / "m")
    report = evaluate_vqa(model_dir, out, tmp_path / "zs", zero_shot=True)
    base = report["baselines"]
    # Every test question has exactly one of the 7 answers right: chance is 1/7.
    assert base["chance"] == pytest.approx(1 / 7)
    assert base["majority_answer"] == "no" and base["majority"] == 0.0
    assert base["question_prior"] == 1.0  # the training answers of the same questions
    assert set(base["per_answer_type"]) == {"yes/no", "other", "number"}
    assert report["num_questions"] == 3
    assert len(json.loads((tmp_path / "zs" / "predictions.json").read_text())) == 3
    with pytest.raises(ValueError, match="not a fine-tuned VQA model"):
        evaluate_vqa(model_dir, out, tmp_path / "x")


def test_question_prior_answers_each_question_text_from_training(vqav2_shards, tmp_path):
    out, _ = vqav2_shards
    prior = read_question_prior(out)  # question_prior.json, written by the build
    # "Is it red?": yes 1.0 + 0.9 against no 0.3 + 1.0; three colours tie at 1.0: the first seen.
    assert prior == {"Is it red?": "yes", "What color is it?": "red", "How many squares?": "1"}
    assert question_prior(iter_questions(split_pattern(out, "train"))) == prior  # from shards
    old = shutil.copytree(out, tmp_path / "old")  # a folder built before the file existed
    (old / "question_prior.json").unlink()
    assert read_question_prior(old) == prior
    records = _records(split_pattern(out, "test"))
    records.append(  # a question never asked in training gets the majority answer
        {"question_id": 99, "question": "Why?", "answers": ["no"] * 10, "answer_type": "other"}
    )
    predictions = {70: "no", 71: "red", 80: "2", 99: "no"}
    base = baselines(records, "no", prior=prior, predictions=predictions)
    assert base["majority"] == 0.25 and base["question_prior"] == 1.0
    assert base["same_as_prior"] == 0.5  # 71 and 99 answer as the prior does
    assert base["per_answer_type"]["yes/no"] == {
        "majority": 0.0,
        "question_prior": 1.0,
        "same_as_prior": 0.0,
    }
    assert "chance" not in base  # only with every candidate's scores
    assert baselines([], "no") == {"majority_answer": "no", "per_answer_type": {}}


def test_cli_builds_vqa_shards_and_explains_bad_input(tmp_path, capsys):
    args = ["data", "vqa", "--source", f"vqav2:{FIXTURE}", "--out", str(tmp_path / "d")]
    assert main([*args, "--min-count", "1"]) == 0
    assert json.loads((tmp_path / "d" / "stats.json").read_text())["answers"] == 7
    assert main(["data", "vqa", "--source", "coco", "--out", str(tmp_path / "e")]) == 2
    assert "unknown VQA source 'coco'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "vqa", "--model", str(tmp_path)])
    assert "the following arguments are required: --data" in capsys.readouterr().err
    assert main(["eval", "vqa", "--model", str(tmp_path), "--data", str(tmp_path / "e")]) == 2
    assert "not a clippo model directory" in capsys.readouterr().err


def test_cli_finetunes_and_evaluates_vqa(vqav2_shards, tmp_path, capsys, one_thread):
    out, _ = vqav2_shards
    sets = {
        "model.options.image_size": 32,
        "finetune.max_lines": 1,
        "data.workers": 0,
        "data.shuffle_buffer": 4,
        "train.precision": "fp32",
        "eval.batch_size": 4,
    }
    args = ["finetune", "vqa", "--data", str(out), "--model", "clippo-mu/16"]
    args += ["--out", str(tmp_path / "ft"), "--lr", "0.1", "--steps", "2", "--batch-size", "4"]
    args += [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "<- best" in printed and "test VQA accuracy (x100) at lr 0.1" in printed
    model = tmp_path / "ft" / "lr_0.1" / "model"
    assert main(["eval", "vqa", "--model", str(model), "--data", str(out)]) == 0
    report = json.loads((tmp_path / "ft" / "lr_0.1" / "vqa_test" / "metrics.json").read_text())
    ft = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert report["overall"] == ft["overall"] and report["num_questions"] == 3
    # A results file is scored without the model, to the same figures and baselines.
    results = tmp_path / "ft" / "predictions.json"
    args = ["eval", "vqa", "--predictions", str(results), "--data", str(out)]
    assert main([*args, "--out", str(tmp_path / "scored")]) == 0
    scored = json.loads((tmp_path / "scored" / "metrics.json").read_text())
    assert scored["overall"] == ft["overall"] and scored["baselines"] == ft["baselines"]
    assert "question prior (blind)" in capsys.readouterr().out
    one_short = json.loads(results.read_text())[1:]  # a question left unanswered
    results.write_text(json.dumps(one_short))
    assert main([*args, "--out", str(tmp_path / "short")]) == 2
    assert "no prediction for 1 of 3 annotated question(s)" in capsys.readouterr().err
    assert main(["eval", "vqa", "--data", str(out)]) == 2
    assert "give --model or --predictions" in capsys.readouterr().err
