#!/usr/bin/env sh
# Offline demo, about 3 minutes on a 2-core CPU: generate a synthetic full-reference set, train the default
# AHIQ architecture on it for a fixed 180 steps of 16 pairs, validate on held-out references, score a few pairs. Nothing is
# downloaded, and every run on a machine ends with the same `demo:` line, whatever the machine's load.
# Backbones: pretrained if their weights are already on this machine (checkpoints/backbones/ or the Hugging
# Face cache), else random-init from a recorded seed (said below). Precision: bf16 where the hardware computes
# it natively (CUDA, or a CPU with AVX512-BF16/AMX), else fp32. The schedule and its departures from the NTIRE
# one are in experiments/demo.py.
#   sh demo.sh [extra train.py options]     DEMO_DIR (default ./runs/demo), DEVICE (cpu), PRECISION (the rule)
set -eu
cd "$(dirname "$0")"
HF_HUB_OFFLINE=1 exec python3 experiments/demo.py --demo_dir "${DEMO_DIR:-./runs/demo}" --device "${DEVICE:-cpu}" \
  ${PRECISION:+--precision "$PRECISION"} "$@"
