#!/usr/bin/env bash
# Trains the comparison runs of docs/results.md one after another (2 CPU cores: never two at
# once), each into runs/NAME, and records its wall-clock training time in runs/NAME/seconds.
# A run whose runs/NAME/model exists is skipped; an interrupted one resumes (--resume).
#
#   clippo data openclipart --out data/openclipart          # the shards `clippo demo` builds
#   clippo tokenizer train --shards 'data/openclipart/train-*.tar' --vocab-size 2000 \
#       --out data/openclipart/spm2000.model                   # for the token models
#   bash scripts/compare.sh models     # table 1: CLIPPO, CLIPPO untied, 1T-CLIP, CLIP*
#   bash scripts/compare.sh lit        # table 2: LiT Lu, Lu with tokens, Uu, uu, Lu x5 steps
#   python scripts/results_table.py runs/demo runs/clippo_untied_demo ...
set -euo pipefail
data=${DATA:-data/openclipart}
shards=(--set "data.train=$data/train-*.tar" --set "data.val=$data/val-*.tar")

run() {  # NAME CONFIG [ARGS...]
  local name=$1 config=$2
  shift 2
  if [[ -d runs/$name/model ]]; then echo "runs/$name done, skipped"; return; fi
  local resume=()
  [[ -d runs/$name/checkpoints ]] && resume=(--resume)
  echo "$(date +%T) training runs/$name ($config $*)"
  local start
  start=$(date +%s)
  clippo train "$config" --workdir "runs/$name" "${resume[@]}" "$@" >"runs/$name.log" 2>&1
  echo $(($(date +%s) - start)) >"runs/$name/seconds"
  echo "$(date +%T) runs/$name: $(cat "runs/$name/seconds") s"
}

mkdir -p runs
case ${1:-} in
  models)
    run demo demo "${shards[@]}"
    run clippo_untied_demo demo "${shards[@]}" --set model.name=clippo-untied-Ti/16
    run onetower_clip_demo onetower_clip_demo
    run clip_demo clip_demo
    ;;
  lit)
    run lit_Lu_demo lit_demo
    run lit_Lu_tokens_demo lit_tokens_demo
    run lit_Uu_demo lit_unlocked_demo
    run lit_uu_demo lit_scratch_demo
    # More compute for the locked tower: 5x the steps (cheap from the feature cache).
    run lit_Lu_600_demo lit_demo --set train.total_steps=600 --set optim.schedule.warmup_steps=50
    ;;
  *) echo "usage: bash scripts/compare.sh models|lit" >&2; exit 2 ;;
esac
