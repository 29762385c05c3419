"""GLUE transfer: metrics against scikit-learn/scipy, the TSV reader, errors, fine-tuning."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn import metrics as skm

from clippo.cli import main
from clippo.data.glue import GLUE_TASKS, read_task, read_tsv
from clippo.eval.glue import compute_metrics, glue_average
from clippo.factory import create_model
from clippo.jobs.glue import finetune, run_glue_task
from clippo.models.heads import TextBackbone
from clippo.train.config import load_config, resolve_config

FIXTURE = Path(__file__).parent / "fixtures" / "glue"
RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 2, 200)
PREDS = np.where(RNG.random(200) < 0.7, LABELS, 1 - LABELS)
SCORES = np.round(RNG.uniform(0, 5, 150), 1)  # rounding makes ties, which ranks must average
SCORE_PREDS = SCORES + RNG.normal(0, 1.5, 150)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_accuracy_tasks_match_sklearn():
    for task in ("sst2", "mnli_m", "mnli_mm", "qnli", "rte"):
        out = compute_metrics(task, PREDS, LABELS)
        assert out == {"accuracy": pytest.approx(skm.accuracy_score(LABELS, PREDS))} | {
            "score": out["accuracy"]
        }
    three = RNG.integers(0, 3, 50)
    assert compute_metrics("mnli", three, three[::-1])["accuracy"] == pytest.approx(
        skm.accuracy_score(three[::-1], three)
    )


@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_f1_tasks_match_sklearn(task):
    out = compute_metrics(task, PREDS, LABELS)
    assert out["f1"] == pytest.approx(skm.f1_score(LABELS, PREDS))
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(LABELS, PREDS))
    assert out["score"] == out["f1"]
    # No positives anywhere: sklearn's zero_division=0 convention.
    zeros = np.zeros(10, int)
    assert compute_metrics(task, zeros, zeros)["f1"] == 0.0


def test_cola_matthews_matches_sklearn():
    out = compute_metrics("cola", PREDS, LABELS)
    assert out["matthews_corr"] == pytest.approx(skm.matthews_corrcoef(LABELS, PREDS))
    assert out["score"] == out["matthews_corr"]
    constant = np.ones(20, int)  # undefined: sklearn returns 0
    assert compute_metrics("cola", constant, LABELS[:20])["matthews_corr"] == pytest.approx(
        skm.matthews_corrcoef(LABELS[:20], constant)
    )


def test_stsb_correlations_match_scipy():
    out = compute_metrics("stsb", SCORE_PREDS, SCORES)
    assert out["spearman"] == pytest.approx(stats.spearmanr(SCORE_PREDS, SCORES)[0], abs=1e-12)
    assert out["pearson"] == pytest.approx(stats.pearsonr(SCORE_PREDS, SCORES)[0], abs=1e-12)
    assert out["score"] == out["spearman"]
    tied = np.round(SCORE_PREDS)  # heavy ties on both sides
    assert compute_metrics("stsb", tied, SCORES)["spearman"] == pytest.approx(
        stats.spearmanr(tied, SCORES)[0], abs=1e-12
    )


def test_glue_average_counts_both_mnli_columns():
    scores = {task: 0.5 for task in GLUE_TASKS}
    scores["mnli_mm"] = 1.0
    assert glue_average(scores) == pytest.approx((8 * 0.5 + 1.0) / 9)
    assert glue_average({"cola": compute_metrics("cola", PREDS, LABELS)}) == pytest.approx(
        skm.matthews_corrcoef(LABELS, PREDS)
    )


def test_wnli_and_unknown_tasks_are_rejected():
    with pytest.raises(ValueError, match="WNLI is excluded"):
        compute_metrics("wnli", PREDS, LABELS)
    with pytest.raises(ValueError, match="WNLI is excluded"):
        read_task(FIXTURE, "WNLI")
    with pytest.raises(ValueError, match="unknown task 'squad'"):
        compute_metrics("squad", PREDS, LABELS)
    with pytest.raises(ValueError, match="WNLI"):
        glue_average({"wnli": 0.5})
    with pytest.raises(ValueError, match="must be equal"):
        compute_metrics("sst2", PREDS[:3], LABELS[:4])


def test_tsv_reader_cola_has_no_header():
    train = read_tsv(FIXTURE / "CoLA" / "train.tsv", "cola")
    assert len(train) == 6 and train.texts_b is None
    assert train.texts_a[0] == "The cat sat on the mat."
    assert train.labels == ["1", "0", "1", "0", "1", "0"]


def test_tsv_reader_columns_per_task():
    splits = read_task(FIXTURE, "sst2")
    assert len(splits["train"]) == 6 and len(splits["dev"]) == 4
    assert splits["dev"].texts_a[0].startswith("it 's a charming")
    mrpc = read_task(FIXTURE / "MRPC", "mrpc")["train"]  # a task folder works too
    assert (mrpc.texts_a[0], mrpc.texts_b[0], mrpc.labels[0]) == (
        "The company said profits rose.",
        "Profits went up, the company said.",
        "1",
    )
    qqp = read_task(FIXTURE, "qqp")["train"]
    assert len(qqp) == 4 and qqp.skipped_rows == 1 and qqp.labels == ["1", "0", "1", "0"]
    stsb = read_task(FIXTURE, "stsb")["dev"]
    assert stsb.texts_b[2] == "A lady is playing a guitar." and stsb.labels[2] == "4.250"
    qnli = read_task(FIXTURE, "qnli")["train"]
    assert qnli.texts_a[0] == "What color is the sky?" and qnli.labels[1] == "not_entailment"
    rte = read_task(FIXTURE, "rte")["dev"]
    assert rte.texts_b == ["She lives in France.", "The shop sells cars."]


def test_tsv_reader_mnli_reads_both_dev_sets_and_gold_label():
    splits = read_task(FIXTURE, "mnli_mm")
    assert set(splits) == {"train", "mnli_m", "mnli_mm"}
    assert len(splits["mnli_m"]) == 3 and len(splits["mnli_mm"]) == 2
    assert splits["train"].texts_b[1] == "The man is running."
    assert splits["mnli_m"].labels == ["entailment", "contradiction", "neutral"]


def test_missing_data_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no train.tsv for rte"):
        read_task(tmp_path, "rte")


def test_pixel_backbone_renders_pairs_with_sep_and_pools_pre_logits():
    torch.manual_seed(0)
    model = create_model("clippo-mu/16", image_size=32)
    backbone = TextBackbone(model)
    pixels = backbone.preprocess(["first one"], ["second"])
    assert np.array_equal(pixels.numpy(), model.renderer(["first one [SEP] second"]))
    assert np.array_equal(pixels.numpy(), model.renderer.render_pair(["first one"], ["second"]))
    feats = backbone(["first one", "b"], ["second", "c"])
    assert feats.shape == (2, backbone.feature_dim) == (2, 32)
    x = pixels.float() / 127.5 - 1
    expected = model.image.forward_features(x[:, None].expand(-1, 3, -1, -1))["pre_logits"]
    torch.testing.assert_close(feats[:1], expected)
    embedding = TextBackbone(model, "embedding")
    assert embedding.feature_dim == model.cfg.out_dim
    torch.testing.assert_close(
        embedding(["first one"], ["second"]),
        model.encode_text(["first one [SEP] second"], normalize=False),
    )
    untied = TextBackbone(create_model("clippo-untied-mu/16", image_size=32))
    assert untied(["x"]).shape == (1, 32)
    with pytest.raises(ValueError, match="representation"):
        TextBackbone(model, "logits")
    with pytest.raises(ValueError, match="got 2 first and 1 second texts"):
        backbone(["a", "b"], ["c"])


@pytest.mark.parametrize("name", ["clip-mu/16", "1t-clip-mu/16"])
def test_token_backbone_tokenizes_the_sep_string_and_pools_before_the_head(
    name, openclipart_tokenizer
):
    torch.manual_seed(0)
    model = create_model(
        name, image_size=32, out_dim=16, tokenizer=str(openclipart_tokenizer), max_len=24
    ).eval()
    backbone = TextBackbone(model)
    ids = backbone.preprocess(["a red apple"], ["on a table"])
    assert np.array_equal(ids.numpy(), model.tokenizer(["a red apple [SEP] on a table"]))
    feats = backbone(["a red apple"], ["on a table"])
    assert backbone.feature_dim == 32 and feats.shape == (1, 32)
    # The head maps exactly these features to the (unnormalised) contrastive embedding.
    head = model.text.head if name == "clip-mu/16" else model.image.head
    torch.testing.assert_close(head(feats), model.encode_text_input(ids, normalize=False))
    assert TextBackbone(model, "embedding").feature_dim == 16


def _glue_cfg(task="sst2", **finetune):
    """The packaged GLUE recipe on a random clippo-mu/16 at 32 px (seed 0), with ``finetune``."""
    sets = ["model.name=clippo-mu/16", "model.options.image_size=32", "data.workers=0",
            f"finetune.task={task}", f"finetune.data={FIXTURE}"]  # fmt: skip
    sets += [f"{'data' if k == 'batch_size' else 'finetune'}.{k}={v}" for k, v in finetune.items()]
    return load_config(resolve_config("glue"), sets)


def test_finetune_learns_the_training_set(tmp_path):
    splits = read_task(FIXTURE, "sst2")
    splits["train_again"] = splits["train"]
    losses = []
    result = finetune(
        _glue_cfg(epochs=40, batch_size=6),
        "sst2",
        splits,
        tmp_path,
        lr=3e-3,
        progress=lambda step, loss: losses.append(loss),
    )
    assert result["steps"] == 40 and len(losses) == 40
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert result["train_again"]["accuracy"] == 1.0


def test_run_glue_task_regression_and_mnli_columns(tmp_path):
    stsb = run_glue_task(_glue_cfg("stsb", lrs=[5e-5], epochs=1), tmp_path)
    assert set(stsb["metrics"]["stsb"]) == {"spearman", "pearson", "score", "examples"}
    assert stsb["labels"] == []
    mnli = run_glue_task(_glue_cfg("mnli", lrs=[2e-5, 5e-5], epochs=1, batch_size=4), tmp_path)
    assert mnli["columns"] == {"mnli_m": "mnli_m", "mnli_mm": "mnli_mm"}
    assert len(mnli["runs"]) == 2 and mnli["best_lr"] in (2e-5, 5e-5)
    assert mnli["runs"][0]["steps"] == 2
    assert mnli["metrics"]["mnli_mm"]["examples"] == 2


def test_cli_finetune_glue_writes_metrics(tmp_path, capsys):
    code = main(
        [
            "finetune", "glue", "--task", "rte", "--data", str(FIXTURE),
            "--model", "clippo-mu/16", "--image-size", "32", "--out", str(tmp_path),
            "--lr", "2e-5", "5e-5", "--epochs", "1", "--max-train", "3", "--threads", "1",
        ]
    )  # fmt: skip
    assert code == 0
    result = json.loads((tmp_path / "rte_metrics.json").read_text())
    assert result["sizes"] == {"train": 3, "dev": 2} and result["full_sizes"]["train"] == 4
    assert [r["lr"] for r in result["runs"]] == [2e-5, 5e-5]
    assert 0.0 <= result["scores"]["rte"] <= 1.0
    assert "rte/accuracy" in capsys.readouterr().out


def test_cli_finetune_glue_rejects_wnli(tmp_path, capsys):
    code = main(
        ["finetune", "glue", "--task", "wnli", "--data", str(FIXTURE), "--model",
         "clippo-mu/16", "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 2 and "WNLI is excluded" in capsys.readouterr().err
