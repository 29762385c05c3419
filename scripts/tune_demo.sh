#!/usr/bin/env bash
# Tunes the demo recipe on a development split, never on the validation pairs:
# trains on openclipart train shards 0-9 (5,000 examples) and evaluates retrieval on train
# shards 10-11 (875 examples). Appends one line per run to $OUT/results.txt.
#
#   clippo data openclipart --out data/openclipart
#   bash scripts/tune_demo.sh NAME STEPS [KEY=VALUE ...]
#   bash scripts/tune_demo.sh r64_1200 1200 eval.sets.val.evaluators.fewshot.shots=[] \
#       model.options.image_size=64
#   CONFIG=clip_demo bash scripts/tune_demo.sh clip_lr3e-3 300 optim.lr=3e-3   # another model
set -euo pipefail
name=$1 steps=$2
shift 2
data=${DATA:-data/openclipart}
out=${OUT:-runs/tune}
sets=()
for kv in "$@"; do sets+=(--set "$kv"); done
mkdir -p "$out"
rm -rf "${out:?}/$name"
start=$(date +%s)
clippo train "${CONFIG:-demo}" --workdir "$out/$name" \
  --set "data.train=$data/train-{000000..000009}.tar" \
  --set "eval.sets.val.data=$data/train-{000010..000011}.tar" \
  --set "train.total_steps=$steps" "${sets[@]}" >"$out/$name.log" 2>&1
python3 - "$out" "$name" "$steps" "$(($(date +%s) - start))" "$*" <<'PY' >>"$out/results.txt"
import json, sys
out, name, steps, secs, args = sys.argv[1:]
m = json.load(open(f"{out}/{name}/metrics.json"))  # the final evaluation
keys = ["i2t_recall@1", "t2i_recall@1", "i2t_recall@5", "t2i_recall@5", "i2t_recall@10",
        "t2i_recall@10", "zeroshot_top1"]
vals = " ".join(f"{k}={100 * m.get('val/' + k, float('nan')):.2f}" for k in keys)
print(f"{name} steps={steps} {secs}s {vals} | {args}")
PY
tail -n 1 "$out/results.txt"
