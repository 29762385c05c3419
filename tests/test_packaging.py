"""A regular install works: the wheel holds the packaged configs, the glyph table and the license,
and, installed into a clean venv with no extras, runs `clippo train demo` and the README's quick
start."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import tiny_cli_args
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the source tree (an in-tree build leaves build/ behind)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=junk)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("clippo-*.whl"))


def test_wheel_holds_configs_glyph_table_and_license(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"clippo/configs/{p.name}" for p in (ROOT / "src/clippo/configs").glob("*.yaml")}
    assert {"clippo/configs/demo.yaml", "clippo/configs/glue.yaml"} <= configs
    assert configs <= names
    assert "clippo/assets/unifont/unifont-15.0.01.npz" in names
    licenses = [n for n in names if re.fullmatch(r"clippo-[^/]+\.dist-info/(licenses/)?LICENSE", n)]
    assert licenses, "no LICENSE in the wheel's dist-info"
    text = zipfile.ZipFile(wheel).read(licenses[0]).decode()
    assert text == (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


QUICK_START_CHECKS = """
assert zimg.shape[0] == 2 and probs.shape == (1, 3) and torch.allclose(probs.sum(-1), torch.ones(1))
assert next(model.parameters()).dtype == torch.bfloat16
again = model.encode_image(["cat.jpg", "dog.png"]).float()
assert (again * zimg).sum(-1).min() > 0.99, (again * zimg).sum(-1)  # bf16 reload, same embedding
print("quick start ok")
"""


@pytest.mark.slow
def test_clean_venv_runs_demo_training_and_quick_start(wheel, openclipart_small, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The source tree must not leak in: only what the wheel installed may be imported.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"  # tiny models: one thread beats two contending for the cores

    def run(*args: str | Path) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(a) for a in args], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
        return done

    # torch from the local wheel folders (pip's configuration here); the wheel with no extras.
    run(python, "-m", "pip", "install", "-q", "torch==2.13.0")
    run(python, "-m", "pip", "install", "-q", wheel)
    installed = run(python, "-c", "import clippo; print(clippo.__file__)").stdout
    assert str(venv) in installed

    workdir = tmp_path / "run"
    run(
        venv / "bin" / "clippo",
        "train",
        "demo",
        "--workdir",
        workdir,
        *tiny_cli_args(openclipart_small),
    )
    assert (workdir / "model" / "config.json").is_file()
    assert (workdir / "checkpoints" / "step_00000002.pt").is_file()

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start \(Python\)\s+```python\n(.*?)```", readme, re.S).group(1)
    assert '"clippo-B/16"' in block
    script = tmp_path / "quick_start.py"
    # The quick start reads two image files: real clip art, saved under its names.
    pngs = sorted(Path("/usr/share/openclipart/png/animals").rglob("*.png"))[:2]
    Image.open(pngs[0]).convert("RGB").save(tmp_path / "cat.jpg")
    Image.open(pngs[1]).save(tmp_path / "dog.png")
    # A tiny ViT: the README's B/16 would write a 370 MB model for the same checks.
    script.write_text(block.replace('"clippo-B/16"', '"clippo-mu/16"') + QUICK_START_CHECKS)
    assert "quick start ok" in run(python, script).stdout
