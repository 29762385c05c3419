#!/usr/bin/env bash
# The reported multilingual recipe (docs/multilingual.md: multilingual_cotrain_ui, 0-4 leading
# spaces) with as many steps as a few minutes of a GPU hold: the run that tells whether more
# steps than 30 CPU minutes hold lift Tamil (issue 15). Two halves:
#
#   bash scripts/gpu_multilingual.sh pack           # here: .carry/multilingual (about 40 MiB)
#   bash scripts/gpu_multilingual.sh run OUT SECONDS [--cpu]
#
# `pack` needs data/textpairs/multi_ui1500, data/openclipart and runs/demo/model (the commands
# are in docs/multilingual.md) and writes what a device machine cannot build itself: the pair
# shards xz-compressed (the reader takes .tar.xz), the openclipart training shards with each
# image stored at 128 px at most (the recipe draws 64 px crops; the full shards do not fit the
# 64 MiB a device call carries), compressed too, and the demo model. On the device, in one call of the `device` tool:
#
#   run(command="bash scripts/gpu_multilingual.sh run $OUT 300", carry=[".carry"], timeout_s=600)
#
# `run` times 60 steps, then trains for SECONDS at that rate, evaluates the held-out
# pairs at 0-3 leading spaces (the rule's dev set) and copies the model and metrics to OUT. Back
# here: `clippo eval multilingual --model OUT/model --data data/tuxpaint ...` and the openclipart
# held-out set, as for every run in docs/multilingual.md. `run /tmp/x 30 --cpu` checks the
# whole path here in about two minutes (the same model, a few dozen steps on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
carry=.carry/multilingual

pack() {
    local tmp="$carry.partial"  # built aside, moved in whole: a stopped pack leaves no half carry
    rm -rf "$tmp" && mkdir -p "$tmp/pairs" "$tmp/openclipart"
    for f in data/textpairs/multi_ui1500/*.tar; do xz -9 -c "$f" >"$tmp/pairs/$(basename "$f").xz"; done
    python3 - "$tmp/openclipart" <<'PYEOF'
import glob, io, sys, tarfile
from pathlib import Path
from PIL import Image

out = Path(sys.argv[1])
for path in sorted(glob.glob("data/openclipart/train-*.tar")):
    with tarfile.open(path) as src, tarfile.open(out / Path(path).name, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith(".jpg"):
                image = Image.open(io.BytesIO(data))
                image.thumbnail((128, 128), Image.Resampling.LANCZOS)
                buffer = io.BytesIO()
                image.save(buffer, "JPEG", quality=92)
                data = buffer.getvalue()
            info = tarfile.TarInfo(member.name)
            info.size, info.mtime = len(data), member.mtime
            dst.addfile(info, io.BytesIO(data))
PYEOF
    xz -9 "$tmp"/openclipart/*.tar
    cp -r runs/demo/model "$tmp/demo"
    rm -rf "$carry" && mv "$tmp" "$carry"
    grep -qxF '/.carry/' .git/info/exclude 2>/dev/null || echo '/.carry/' >>.git/info/exclude
    du -sh "$carry"/* "$carry"
}

train() {  # train WORKDIR STEPS EXTRA_SETS...
    local workdir=$1 steps=$2
    shift 2
    python3 -m clippo.cli train multilingual_cotrain_ui --workdir "$workdir" \
        --set "model.init=$carry/demo" \
        --set "data.train=$carry/openclipart/train-*.tar.xz" \
        --set "data.text_pairs=$carry/pairs/train-*.tar.xz" \
        --set data.augment.leading_spaces=4 --set "train.total_steps=$steps" \
        --set train.log_every=20 --set "train.ckpt_every=$steps" "$@"
}

run() {
    local out=$1 seconds=$2 extra=()
    if [[ "${3:-}" == --cpu ]]; then export CUDA_VISIBLE_DEVICES=""; fi
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    local workers=$(($(nproc) > 2 ? $(nproc) - 2 : 1))
    extra+=(--set "data.workers=$workers")
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"
    # 1. the rate: 60 steps, no evaluation (the first 20 hold the start-up and are left out).
    rm -rf /tmp/gpu_multilingual_probe /tmp/gpu_multilingual
    train /tmp/gpu_multilingual_probe 60 "${extra[@]}" --set "eval.sets={}" >/tmp/probe.log 2>&1 ||
        { tail -n 40 /tmp/probe.log; exit 1; }
    local steps
    steps=$(python3 - "$seconds" <<'PYEOF'
import sys
from pathlib import Path
sys.path.insert(0, "bench")
from train_loop import steady_rate  # the loop's rate after its start-up window
rate = steady_rate(Path("/tmp/gpu_multilingual_probe/metrics.jsonl"), 256, skip=1)
print(max(20, int(float(sys.argv[1]) * rate / 256) // 20 * 20))
print(f"probe: {rate:.0f} examples/s", file=sys.stderr)
PYEOF
    )
    echo "training $steps steps (${seconds} s at the probe's rate)"
    # 2. the run, the held-out pairs scored at the end as the rule reads them.
    local dev="{dev: {kind: textpairs, data: '$carry/pairs/val-*.tar.xz', every: 0, evaluators: {bitext: {leading_spaces: [1, 2, 3]}}}}"
    SECONDS=0
    train /tmp/gpu_multilingual "$steps" "${extra[@]}" --set "eval.sets=$dev" 2>&1 |
        tr '\r' '\n' | grep -E '^dev/(spaces[0-9]+/|spaces_mean/)?(mean/)?b2a_recall@1 |^model written|rror' || true
    echo "wall ${SECONDS} s for ${steps} steps and the dev evaluation"
    mkdir -p "$out/model"
    cp /tmp/gpu_multilingual/model/* "$out/model/"
    cp /tmp/gpu_multilingual/metrics.jsonl /tmp/gpu_multilingual/config.yaml "$out/"
}

case "${1:-}" in
    pack) pack ;;
    run) [[ $# -ge 3 ]] || { echo "usage: $0 run OUT SECONDS [--cpu]" >&2; exit 2; }; shift; run "$@" ;;
    *) echo "usage: $0 pack | run OUT SECONDS [--cpu]" >&2; exit 2 ;;
esac
