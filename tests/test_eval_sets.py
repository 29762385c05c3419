"""Evaluation sets and the evaluator registry: named sets with their own data, evaluators and
schedules; one embedding pass per set; cached few-shot training embeddings; errors before
training; a new evaluator is a registration, nothing else."""

from dataclasses import dataclass

import pytest
import torch
from helpers import val_set

import clippo.eval.sets as sets_module
from clippo.eval.registry import EVALUATORS, register
from clippo.eval.sets import EvalSets
from clippo.factory import create_model
from clippo.schema import ConfigError
from clippo.train.config import load_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _sets(shards, sets: dict, train: bool = True) -> EvalSets:
    out, stats = shards
    tree = {"eval": {"batch_size": 64, "sets": sets}}
    if train:
        tree["data"] = {"train": str(out / stats["train_pattern"])}
    cfg = load_config(tree)
    return EvalSets(cfg.eval.sets, batch_size=64, train_data=cfg.data.train or None)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("clippo-mu/16", image_size=32, out_dim=16).eval()


@pytest.fixture
def count_embeds(monkeypatch):
    calls = []
    real = sets_module.embed_shards

    def counting(model, pattern, **kw):
        calls.append((pattern, kw.get("with_texts", True), kw.get("max_examples")))
        return real(model, pattern, **kw)

    monkeypatch.setattr(sets_module, "embed_shards", counting)
    return calls


def test_metrics_are_prefixed_by_set_and_each_set_is_embedded_once(
    openclipart_small, model, count_embeds
):
    out, stats = openclipart_small
    other = {"data": str(out / stats["train_pattern"]), "evaluators": {"retrieval": {"ks": [1]}}}
    sets = _sets(openclipart_small, {"val": val_set(openclipart_small, "first", 40), "tr": other})
    results = sets.run(model)
    recall = {f"val/{d}_recall@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}
    assert set(results) == recall | {
        "val/zeroshot_top1",
        "val/zeroshot_top5",
        "val/fewshot_10shot",
        "tr/i2t_recall@1",
        "tr/t2i_recall@1",
    }
    val_pattern = str(out / stats["val_pattern"])
    # One pass per set (with captions, since retrieval needs them) + the few-shot pool.
    assert [c for c in count_embeds if c[2] is None] == [(val_pattern, True, None),
                                                         (other["data"], True, None)]  # fmt: skip
    assert sets.embedded["val"].image.shape[0] == stats["val"]
    assert len(sets.embedded["val"].texts) == stats["val"]  # captions: first


def test_sets_run_on_their_own_schedule(openclipart_small):
    out, stats = openclipart_small
    a = {**val_set(openclipart_small), "every": 3}
    b = {"data": str(out / stats["val_pattern"]), "every": 0, "evaluators": {"retrieval": {}}}
    sets = _sets(openclipart_small, {"a": a, "b": b})
    assert [s for s in range(1, 10) if sets.due(s, final=False)] == [3, 6, 9]
    assert sets.due(10, final=True)
    m = create_model("clippo-mu/16", image_size=32, out_dim=16)
    assert {k.split("/")[0] for k in sets.run(m, step=6, final=False)} == {"a"}
    assert {k.split("/")[0] for k in sets.run(m, step=7, final=True)} == {"a", "b"}


def test_fewshot_training_embeddings_are_not_recomputed_for_an_unchanged_model(
    openclipart_small, count_embeds
):
    torch.manual_seed(0)
    m = create_model("clippo-mu/16", image_size=32, out_dim=16)
    sets = _sets(openclipart_small, {"val": val_set(openclipart_small, train_examples=40)})
    first = sets.run(m)
    pool = [c for c in count_embeds if c[2] == 40]
    assert len(pool) == 1
    assert sets.run(m) == first  # the same model: the pool is reused, the figures repeat
    assert len([c for c in count_embeds if c[2] == 40]) == 1
    with torch.no_grad():
        m.image.head.weight.mul_(2.0)  # changed weights: embedded again
    sets.run(m)
    assert len([c for c in count_embeds if c[2] == 40]) == 2


def test_a_new_evaluator_is_a_registration(openclipart_small, monkeypatch, model):
    monkeypatch.delitem(EVALUATORS, "mean_norm", raising=False)

    @dataclass
    class MeanNorm:
        scale: float = 1.0
        needs_texts = False

        def __call__(self, ctx):
            return {"mean_norm": self.scale * ctx.embedded.image.norm(dim=-1).mean().item()}

    register("mean_norm")(MeanNorm)
    try:
        out, stats = openclipart_small
        s = {"data": str(out / stats["val_pattern"]), "evaluators": {"mean_norm": {"scale": 2}}}
        results = _sets(openclipart_small, {"v": s}).run(model)
        assert results == {"v/mean_norm": pytest.approx(2.0, abs=1e-4)}  # unit embeddings
        assert _sets(openclipart_small, {"v": s}).embedded == {}
    finally:
        EVALUATORS.pop("mean_norm", None)


@pytest.mark.parametrize(
    "evaluators, error, message",
    [
        ({"retrieva": {}}, ConfigError, r"eval.sets.val.evaluators: unknown evaluator 'retrieva'"),
        (
            {"zeroshot": {"prompt": "x"}},
            ConfigError,
            r"unknown config key 'eval.sets.val.evaluators.zeroshot.prompt'",
        ),
        ({"zeroshot": {"prompts": "bogus"}}, ConfigError, r"zeroshot: .*bogus"),
        ({"zeroshot": {}}, ConfigError, r"prompts: name a packaged prompt set"),
        ({"retrieval": {"ks": "one"}}, ConfigError, r"ks: expected a list"),
        ({}, ConfigError, r"list at least one evaluator"),
    ],
)
def test_bad_evaluators_fail_before_training_naming_the_key(
    openclipart_small, evaluators, error, message
):
    out, stats = openclipart_small
    with pytest.raises(error, match=message):
        _sets(openclipart_small, {"val": {"data": str(out / stats["val_pattern"]),
                                          "evaluators": evaluators}})  # fmt: skip


def test_missing_data_and_missing_fewshot_source_fail_before_training(openclipart_small, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.tar"):
        _sets(openclipart_small, {"val": {**val_set(openclipart_small),
                                          "data": str(tmp_path / "missing.tar")}})  # fmt: skip
    with pytest.raises(ValueError, match="fewshot.train_data: no labelled training shards"):
        _sets(openclipart_small, {"val": val_set(openclipart_small)}, train=False)


@pytest.mark.parametrize(
    "override, where",
    [
        ("data.val=x.tar", "eval.sets.val.data=PATTERN"),
        ("eval.zeroshot=openclipart", "eval.sets.NAME.evaluators.zeroshot.prompts=NAME"),
        ("eval.fewshot_train_examples=10", "evaluators.fewshot.train_examples=N"),
        ("train.eval_every=100", "eval.sets.NAME.every=STEPS"),
    ],
)
def test_old_evaluation_keys_say_how_to_migrate(override, where):
    key = override.partition("=")[0]
    with pytest.raises(ConfigError, match=rf"config key '{key}' has moved: .*{where}"):
        load_config(None, [override])
