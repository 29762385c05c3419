"""Replays the fault catalogue of a hostile user and a crashing machine against the `clippo`
command and prints what a user sees: case | outcome | the line on the screen.

    python bench/faults.py              # ~3 min on 2 CPU cores; builds tiny real shards first
    python bench/faults.py --kills 5    # more random kill -9 points

Outcomes: "clear error" (exit 2 with one line naming the problem), "skipped and counted"
(the run goes on and reports what it dropped), "resumed identical" (kill -9 and --resume give
bit-identical weights to an uninterrupted run), "exit 0", or "FAILED: ..." when the
behaviour is not the documented one.
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

CLI = [sys.executable, "-m", "clippo.cli"]


def sh(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def last_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip() and "%|" not in x]
    return lines[-1].strip() if lines else ""


def tiny(shards: Path, **extra) -> list[str]:
    """--set arguments for a seconds-long run of the demo config on the tiny shards."""
    sets = {
        "model.name": "clippo-mu/16",
        "model.options": "{image_size: 32, out_dim: 16}",
        "data.train": f"{shards}/train-*.tar",
        "eval.sets.val.data": f"{shards}/val-*.tar",
        "eval.sets.val.evaluators.fewshot.train_examples": 40,
        "data.batch_size": 8,
        "data.workers": 0,
        "data.shuffle_buffer": 20,
        "train.total_steps": 12,
        "train.ckpt_every": 3,
        "train.keep_ckpts": 2,
        "train.precision": "fp32",
        "train.threads": 1,
        "optim.schedule.warmup_steps": 2,
    } | extra
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


def weights(workdir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(workdir / "model" / "model.safetensors")


def identical(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def error_case(result: subprocess.CompletedProcess, must: str) -> tuple[str, str]:
    line = last_line(result.stderr)
    if result.returncode == 2 and must in line and line.startswith("clippo "):
        return "clear error", line
    return f"FAILED: exit {result.returncode}", line or last_line(result.stdout)


def kill_and_resume(shards: Path, work: Path, kills: int, seed: int) -> tuple[str, str]:
    # Long enough (tens of seconds) that every kill lands mid-run, some during checkpoint writes.
    long = {"train.total_steps": 3000, "train.ckpt_every": 40, "eval.sets": "{}"}
    straight = work / "straight"
    sh("train", "demo", "--workdir", str(straight), *tiny(shards, **long))
    reference = weights(straight)
    rng = random.Random(seed)
    target = work / "killed"
    done = 0
    for _ in range(kills):
        resume = ["--resume"] if (target / "checkpoints").is_dir() else []
        proc = subprocess.Popen(
            [*CLI, "train", "demo", "--workdir", str(target), *resume, *tiny(shards, **long)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(4.0, 10.0))  # start-up, data, some steps, some checkpoint writes
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            done += 1
        proc.wait()
    resume = ["--resume"] if (target / "checkpoints").is_dir() else []
    result = sh("train", "demo", "--workdir", str(target), *resume, *tiny(shards, **long))
    if result.returncode != 0:
        return f"FAILED: exit {result.returncode}", last_line(result.stderr)
    same = identical(weights(target), reference)
    line = f"{done} x kill -9, then --resume: weights bit-identical to a run never killed"
    return ("resumed identical" if same else "FAILED: weights differ"), line


def damaged_newest_checkpoint(shards: Path, work: Path) -> tuple[str, str]:
    run = work / "damaged"
    sh("train", "demo", "--workdir", str(run), *tiny(shards, **{"train.keep_ckpts": 5}))
    reference = weights(run)
    ckpts = sorted((run / "checkpoints").glob("step_*.pt"))
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:1000])  # a crash mid-copy, a full disk
    (run / "checkpoints" / ".tmp_step_00000099.pt.x").write_bytes(b"partial")
    shutil.rmtree(run / "model")
    result = sh(
        "train", "demo", "--workdir", str(run), "--resume", *tiny(shards, **{"train.keep_ckpts": 5})
    )
    warned = [x for x in result.stderr.splitlines() if "older checkpoint" in x]
    ok = result.returncode == 0 and identical(weights(run), reference)
    ok = ok and not (run / "checkpoints" / ".tmp_step_00000099.pt.x").exists()
    line = warned[0].split("UserWarning: ")[-1] if warned else last_line(result.stderr)
    return ("resumed identical" if ok else "FAILED"), line


def crafted_checkpoint(shards: Path, work: Path) -> tuple[str, str]:
    import torch

    run = work / "crafted"
    sh("train", "demo", "--workdir", str(run), *tiny(shards))
    newest = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
    marker = work / "pwned"
    state = torch.load(newest, weights_only=True)

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    state["model"]["x"] = Payload()
    torch.save(state, newest)
    result = sh("train", "demo", "--workdir", str(run), "--resume", *tiny(shards))
    outcome, line = error_case(result, "refused")
    if marker.exists():
        outcome = "FAILED: the payload ran"
    return outcome, line


def poisoned_update(shards: Path, work: Path) -> tuple[str, str]:
    run = work / "poison"
    extra = {"optim.lr": "1e39", "train.ckpt_every": 1, "train.keep_ckpts": 1}
    outcome, line = error_case(
        sh("train", "demo", "--workdir", str(run), *tiny(shards, **extra)), "non-finite"
    )
    if list((run / "checkpoints").glob("step_*.pt")):
        outcome = "FAILED: a checkpoint was written"
    return outcome, line


def no_evaluation(shards: Path, work: Path) -> tuple[str, str]:
    run = work / "noeval"
    first = sh("train", "demo", "--workdir", str(run), *tiny(shards, **{"eval.sets": "{}"}))
    again = sh(
        "train", "demo", "--workdir", str(run), "--resume", *tiny(shards, **{"eval.sets": "{}"})
    )
    ok = first.returncode == 0 and again.returncode == 0
    return ("exit 0" if ok else f"FAILED: exit {first.returncode}/{again.returncode}"), last_line(
        again.stdout
    )


def truncated(path: Path, out: Path, fraction: float = 0.6) -> Path:
    data = path.read_bytes()
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


def damaged_training_shard(shards: Path, work: Path) -> tuple[str, str]:
    bad = work / "badtrain"
    bad.mkdir()
    for f in sorted(shards.glob("train-*.tar")):
        shutil.copy(f, bad / f.name)
    first = sorted(bad.glob("*.tar"))[0]
    truncated(first, first)
    extra = {"data.train": f"{bad}/train-*.tar", "train.total_steps": 30, "eval.sets": "{}"}
    result = sh("train", "demo", "--workdir", str(work / "badtrain-run"), *tiny(shards, **extra))
    lines = [x for x in result.stdout.splitlines() if x.startswith("training: skipped")]
    ok = result.returncode == 0 and lines and first.name in lines[0]
    return ("skipped and counted" if ok else "FAILED"), (
        lines[0] if lines else last_line(result.stderr)
    )


def damaged_eval_shard(shards: Path, work: Path, model: Path) -> tuple[str, str]:
    bad = truncated(sorted(shards.glob("val-*.tar"))[0], work / "val-damaged.tar")
    sets = [
        "--set",
        f"eval.sets.val.data={bad}",
        "--set",
        "eval.sets.val.evaluators={retrieval: {}}",
    ]
    result = sh("eval", "--model", str(model), "--config", "demo", *sets)
    lines = [x for x in result.stdout.splitlines() if "skipped" in x and "evaluation set" in x]
    ok = result.returncode == 0 and lines and bad.name in lines[0]
    return ("skipped and counted" if ok else "FAILED"), (
        lines[0] if lines else last_line(result.stderr)
    )


def oversize_member(shards: Path, work: Path) -> tuple[str, str]:
    from clippo.data import ImageTransform, ShardDataset

    path = work / "bomb-000000.tar.gz"
    with (
        tarfile.open(path, "w:gz") as tar,
        tarfile.open(sorted(shards.glob("val-*.tar"))[0]) as src,
    ):
        for member in src.getmembers()[:6]:
            tar.addfile(member, src.extractfile(member))
        info = tarfile.TarInfo("bomb.jpg")
        info.size = 65 << 20
        tar.addfile(info, io.BytesIO(bytes(65 << 20)))  # zeros: ~64 KiB once compressed
        meta = tarfile.TarInfo("bomb.txt")
        meta.size = 4
        tar.addfile(meta, io.BytesIO(b"bomb"))
    data = ShardDataset(
        str(path), batch_size=64, image_transform=ImageTransform(32, train=False), train=False
    )
    batches = list(data)
    reasons = {k: v for b in batches for k, v in b["skip_reasons"].items()}
    ok = reasons.get("member_too_large") == 1
    line = f"{path.name}: {sum(len(b['key']) for b in batches)} samples read, skipped {reasons}"
    return ("skipped and counted" if ok else "FAILED"), line


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from clippo.data.build.openclipart import build_openclipart_shards

    work = Path(tempfile.mkdtemp(prefix="clippo-faults-"))
    shards = work / "shards"
    build_openclipart_shards(
        shards, max_examples=240, val_size=40, image_size=64, shard_size=50, workers=1
    )
    model_run = work / "model-run"
    sh("train", "demo", "--workdir", str(model_run), *tiny(shards))
    model = model_run / "model"
    bad_yaml = work / "bad.yaml"
    bad_yaml.write_text("train:\n  total_steps: [1\n")
    broken_model = work / "broken-model"
    shutil.copytree(model, broken_model)
    (broken_model / "config.json").write_text("{not json")
    cut_model = work / "cut-model"
    shutil.copytree(model, cut_model)
    truncated(cut_model / "model.safetensors", cut_model / "model.safetensors", 0.3)
    npz = work / "cut.npz"
    npz.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    blocker = work / "not-a-dir"
    blocker.write_text("a file where the work directory should be")

    cases = [
        (
            "kill -9 at random points, --resume",
            lambda: kill_and_resume(shards, work, args.kills, args.seed),
        ),
        (
            "truncated newest checkpoint + partial temp file",
            lambda: damaged_newest_checkpoint(shards, work),
        ),
        ("crafted checkpoint (pickle payload)", lambda: crafted_checkpoint(shards, work)),
        (
            "update that makes the weights non-finite (lr 1e39)",
            lambda: poisoned_update(shards, work),
        ),
        ("run without evaluation, and its --resume", lambda: no_evaluation(shards, work)),
        ("truncated training shard", lambda: damaged_training_shard(shards, work)),
        ("truncated evaluation shard", lambda: damaged_eval_shard(shards, work, model)),
        ("tar member of 65 MiB in a 64 KiB .tar.gz", lambda: oversize_member(shards, work)),
        (
            "unknown prompt set, found before step 1",
            lambda: error_case(
                sh(
                    "train",
                    "demo",
                    "--workdir",
                    str(work / "p"),
                    *tiny(shards, **{"eval.sets.val.evaluators.zeroshot.prompts": "bogus"}),
                ),
                "bogus",
            ),
        ),
        (
            "missing evaluation shards, found before step 1",
            lambda: error_case(
                sh(
                    "train",
                    "demo",
                    "--workdir",
                    str(work / "m"),
                    *tiny(shards, **{"eval.sets.val.data": str(work / "missing.tar")}),
                ),
                "missing.tar",
            ),
        ),
        (
            "negative learning rate",
            lambda: error_case(
                sh(
                    "train", "demo", "--workdir", str(work / "n"), *tiny(shards, **{"optim.lr": -1})
                ),
                "optim.lr",
            ),
        ),
        (
            "unknown optimizer option",
            lambda: error_case(
                sh(
                    "train",
                    "demo",
                    "--workdir",
                    str(work / "k"),
                    *tiny(shards, **{"optim.kwargs": "{betas: 1}"}),
                ),
                "betas",
            ),
        ),
        (
            "--resume with a changed learning rate",
            lambda: error_case(
                sh(
                    "train",
                    "demo",
                    "--workdir",
                    str(model_run),
                    "--resume",
                    *tiny(shards, **{"optim.lr": 0.5}),
                ),
                "changed settings",
            ),
        ),
        (
            "YAML syntax error in a config file",
            lambda: error_case(
                sh("train", str(bad_yaml), "--workdir", str(work / "y")), "bad.yaml"
            ),
        ),
        (
            "--set 'data.train=[1'",
            lambda: error_case(
                sh("train", "demo", "--workdir", str(work / "s"), "--set", "data.train=[1"),
                "data.train=[1",
            ),
        ),
        (
            "model directory with invalid config.json",
            lambda: error_case(
                sh("eval", "--model", str(broken_model), "--config", "demo", *tiny(shards)),
                "config.json",
            ),
        ),
        (
            "model directory with truncated weights",
            lambda: error_case(
                sh("eval", "--model", str(cut_model), "--config", "demo", *tiny(shards)),
                "model.safetensors",
            ),
        ),
        (
            "convert bigvision on a truncated .npz",
            lambda: error_case(sh("convert", "bigvision", str(npz), str(work / "c")), "cut.npz"),
        ),
        (
            "a file where the work directory should be",
            lambda: error_case(
                sh("train", "demo", "--workdir", str(blocker), *tiny(shards)), "not-a-dir"
            ),
        ),
    ]
    print("| case | outcome | what the user sees |")
    print("|---|---|---|")
    failed = 0
    for name, case in cases:
        try:
            outcome, line = case()
        except Exception as e:  # a case that crashes is a finding, not a reason to stop
            outcome, line = f"FAILED: {type(e).__name__}", str(e).splitlines()[0]
        failed += outcome.startswith("FAILED")
        line = line.replace(str(work), "$WORK").replace("|", "\\|")
        print(f"| {name} | {outcome} | `{line}` |", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    print(f"\n{len(cases) - failed} of {len(cases)} cases behave as documented")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
