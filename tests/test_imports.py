"""The package's shape: data flows one way, nothing imports in a circle (not even lazily), and
every module imports on its own."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src"
# Stages in the order data flows (README, "Layout"); a module may import from its own stage or
# an earlier one. train (the engine) and eval (the evaluators) share a stage and never import
# each other: jobs wire them together.
STAGES = [
    (
        "clippo.render",
        "clippo.tokenizer",
        "clippo.atomic",
        "clippo.schema",
        "clippo.extras",
        "clippo.prompts",
    ),
    ("clippo.data",),
    ("clippo.data.build",),
    ("clippo.models",),
    ("clippo.convert",),
    ("clippo.factory",),
    ("clippo.losses",),
    ("clippo.train", "clippo.eval"),
    ("clippo.analysis",),
    ("clippo.jobs",),
    ("clippo.cli",),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "clippo").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every clippo module ``name`` imports, at the top or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            # `from clippo.x import y` imports the submodule clippo.x.y when there is one.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]  # fmt: skip
        else:
            continue
        found |= {t for t in targets if t == "clippo" or t.startswith("clippo.")}
    # Importing a module runs its ancestors' __init__ too; a module's own ancestors are already
    # being imported when it runs, so edges to them are not cycles.
    return {t for t in found if not name.startswith(t + ".") and t != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _stage(name: str) -> int:
    best = None
    for i, prefixes in enumerate(STAGES):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    assert best is not None, f"{name} is in no stage: add it to STAGES"
    return best[0]


def _group(name: str) -> str:
    return ".".join(name.split(".")[:2])


def test_every_module_has_a_stage_and_imports_only_earlier_stages():
    wrong = []
    for name, targets in GRAPH.items():
        if name == "clippo":  # the package root's lazy shortcuts (clippo.create_model, ...)
            continue
        for target in targets:
            if target == "clippo":
                continue
            a, b = _stage(name), _stage(target)
            if b > a or (b == a and _group(name) != _group(target) and a == _stage("clippo.train")):
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports against the data flow: " + ", ".join(sorted(wrong))


def test_no_import_cycles_even_lazy_ones():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)


def test_the_checker_sees_a_lazy_cycle(tmp_path):
    # models/lit.py used to import convert inside a function while convert imported models.
    source = "def f():\n    from clippo.convert import from_big_vision\n"
    fake = tmp_path / "lit.py"
    fake.write_text(source)
    assert "clippo.convert" in _imports("clippo.models.lit", fake)


def test_every_module_imports_on_its_own():
    # One interpreter loads the third-party libraries once, then forks a clean child per module,
    # so each clippo module is imported with no other clippo module loaded before it.
    script = f"""
import importlib, os, sys, traceback
import numpy, torch, PIL.Image, yaml, safetensors.torch  # noqa: F401
assert not any(m == "clippo" or m.startswith("clippo.") for m in sys.modules)
failed = []
for name in {sorted(MODULES)!r}:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(name)
print("FAILED", failed)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "FAILED []" in out.stdout, out.stdout + out.stderr
