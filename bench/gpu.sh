#!/usr/bin/env bash
# The device check (issue 18): one script, a JSON and a markdown table in the output folder.
#
#   bench/gpu.sh OUT_DIR                 # on a GPU: clippo-B/16 at 224 px, batch 256/512/1024
#   bench/gpu.sh --cpu --tiny OUT_DIR    # here, end to end in under a minute (a tiny model)
#
# Checks: device forward equals the CPU forward (bf16 tolerance), 20 steps lower the loss;
# training examples/s and peak memory per batch size, eager vs compiled, activation
# checkpointing off/on, DDP vs FSDP (one process); MFU on CUDA; open_clip's ViT-B-16 and
# Hugging Face's CLIP at the same batch when importable (else reported as unavailable).
# --budget-s caps the timed part (default 420 s: 8 minutes with start-up).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export PYTHONPATH="${here}/../src${PYTHONPATH:+:$PYTHONPATH}"
exec python3 "${here}/gpu_check.py" "$@"
