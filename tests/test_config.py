"""Config loading: YAML onto dataclasses, overrides, and errors that name the bad key."""

import dataclasses
from pathlib import Path

import pytest

import clippo
from clippo.train.config import ConfigError, load_config, resolve_config

PACKAGED = sorted(p.stem for p in (Path(clippo.__file__).parent / "configs").glob("*.yaml"))


def test_packaged_recipe_loads_with_paper_values():
    cfg = load_config(resolve_config("clippo_b16_yfcc"))
    assert cfg.model.name == "clippo-B/16"
    assert (cfg.data.batch_size, cfg.train.total_steps) == (10240, 250_000)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.wd) == ("adafactor", 1e-3, 1e-4)
    assert cfg.optim.schedule.warmup_steps == cfg.optim.schedule.cooldown_steps == 10_000


@pytest.mark.parametrize("name", PACKAGED)
def test_every_packaged_config_loads_and_passes_its_checks(name):
    # Every key known, every value of its type and every cross-check (text-pair counts,
    # in-memory data, fine-tuning protocols) passed: a typo in a recipe fails here, not an hour in.
    cfg = load_config(resolve_config(name))
    assert cfg.effective_total_steps > 0 and cfg.data.batch_size > 0


def test_multilingual_cotrain_mixes_three_quarters_pairs_for_700_steps():
    cfg = load_config(resolve_config("multilingual_cotrain"))
    assert (cfg.data.text_pairs_per_batch, cfg.effective_total_steps) == (192, 700)
    assert cfg.model.init == "runs/demo/model" and cfg.data.in_memory


def test_overrides_apply_with_yaml_types():
    cfg = load_config(None, ["optim.lr=3e-4", "data.augment.flip=true", "model.options={depth: 2}"])
    assert cfg.optim.lr == 3e-4 and cfg.data.augment.flip is True
    assert cfg.model.options == {"depth": 2}


def test_unknown_key_is_named_with_its_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  schedule:\n    warmup_step: 10\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.schedule.warmup_step'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"unknown config key 'trian'"):
        load_config(None, ["trian.total_steps=3"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.total_steps=abc", r"train.total_steps: expected a number, got 'abc'"),
        ("train.total_steps=2.5", r"train.total_steps: expected an integer, got 2.5"),
        ("data.augment.flip=3", r"data.augment.flip: expected true/false, got 3"),
        ("optim.name=lamb", r"optim.name must be one of \[.*'sgd'\], got 'lamb'"),
        ("model.name=clippo-Z/16", r"model.name: unknown model name 'clippo-Z/16'"),
        ("train.log_every=0", r"train.log_every must be positive, got 0"),
        ("optim.lr", r"override 'optim.lr' must look like section.key=value"),
    ],
)
def test_bad_values_raise_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config file 'nope'"):
        resolve_config("nope")
    with pytest.raises(FileNotFoundError, match="missing.yaml not found"):
        load_config(tmp_path / "missing.yaml")


def test_in_memory_data_and_an_image_feature_cache_exclude_each_other():
    assert load_config(None, ["data.in_memory=true"]).data.in_memory
    with pytest.raises(ConfigError, match="data.in_memory and data.image_cache: choose one"):
        load_config(None, ["data.in_memory=true", "data.image_cache=cache/"])


@pytest.mark.parametrize("override", ["finetune.task=sst2", "finetune.protocol=fused"])
def test_in_memory_data_is_refused_for_fine_tuning(override):
    with pytest.raises(ConfigError, match="leave data.in_memory off"):
        load_config(None, ["data.in_memory=true", override])


def test_multilingual_cotrain_ui_is_the_earlier_recipe_with_what_the_dev_set_chose():
    # docs/multilingual.md: the interface-message pairs, the lr picked on the pairs' held-out
    # bitext (dev), 850 steps; everything else the names-only recipe's.
    def flat(cfg, prefix=""):
        tree = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg
        out = {}
        for key, value in tree.items():
            if isinstance(value, dict) and value and key != "sets":
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    before = flat(load_config(resolve_config("multilingual_cotrain")))
    after = flat(load_config(resolve_config("multilingual_cotrain_ui")))
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    sets = changed.pop("eval.sets")
    assert changed == {
        "data.text_pairs": ("data/textpairs/multi_cldr/train-*.tar",
                            "data/textpairs/multi_ui1500/train-*.tar"),
        "optim.lr": (3e-4, 1e-3),
        "train.total_steps": (700, 850),
    }  # fmt: skip
    dev = sets[1]["dev"]
    assert set(sets[1]) - set(sets[0]) == {"dev"}
    assert (dev["kind"], list(dev["evaluators"])) == ("textpairs", ["bitext"])
    assert dev["data"] == "data/textpairs/multi_ui1500/val-*.tar"


@pytest.mark.parametrize("setting", ["leading_spaces=4", "join_pairs=0.5"])
def test_text_augmentations_are_refused_for_fine_tuning(setting):
    pairs = ["data.text_pairs=p-*.tar", "data.text_pair_fraction=0.5"]
    key, value = setting.split("=")
    cfg = load_config(None, [f"data.augment.{setting}", *pairs])
    assert getattr(cfg.data.augment, key) == float(value)
    message = f"data.augment.{key} augments the texts of contrastive pre-training; fine-tuning"
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"data.augment.{setting}", "finetune.task=sst2"])


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["data.augment.join_pairs=0.5"], "join_pairs joins text pairs, but data.text_pair_frac"),
        (["data.augment.join_pairs=1.5"], "must be a probability in \\[0, 1\\], got 1.5"),
        (["data.augment.join_pairs=-0.1"], "a probability in \\[0, 1\\], got -0.1"),
        (["data.augment.join_pairs=true"], "join_pairs: expected a number, got True"),
    ],
)
def test_join_pairs_needs_a_probability_and_text_pairs(sets, message):
    pairs = [] if "=0.5" in sets[0] else ["data.text_pairs=p-*.tar", "data.text_pair_fraction=0.5"]
    with pytest.raises(ConfigError, match=message):
        load_config(None, [*sets, *pairs])
