#!/usr/bin/env sh
# Offline demo, about 3 minutes on a 2-core CPU: generate a synthetic full-reference set, train the default
# AHIQ architecture on it, validate on held-out references, score a few pairs. Nothing is downloaded.
# Backbones: pretrained if their weights are already on this machine (checkpoints/backbones/ or the Hugging
# Face cache), else random-init (said below). To keep within minutes on a CPU the demo departs from the NTIRE
# schedule (200 epochs of 224-pixel crops): 32-pixel synthetic images used whole, 2 epochs over 120 references
# at batch 16, one cosine decay over the run (--T_max 0) from 3e-4, with the weights of the three layers that
# read the backbone features at a tenth of that (--feature_lr_scale 0.1; at 1 the same run ends at SRCC 0.70
# instead of 0.86), and a time limit as a guard.
#   sh demo.sh [extra train.py options]          DEMO_DIR (default ./runs/demo) holds data and checkpoints
set -eu
cd "$(dirname "$0")"
DEMO_DIR=${DEMO_DIR:-./runs/demo}
DEVICE=${DEVICE:-cpu}
PRETRAINED=$(HF_HUB_OFFLINE=1 python3 -c "from models.backbones import pretrained_available as p; print(str(p()).lower())")
if [ "$PRETRAINED" = true ]; then WEIGHTS="pretrained backbones"; else WEIGHTS="random-init backbones"; fi
# bf16 where the CPU computes it natively (AVX512-BF16/AMX: about 1.6x more steps in the time budget), else fp32.
PRECISION=${PRECISION:-$(python3 -c "
import torch
try:
    fast = torch.ops.mkldnn._is_mkldnn_bf16_supported()
except Exception:
    fast = False
print('bf16' if fast or torch.cuda.is_available() else 'fp32')")}
echo "demo: data=$DEMO_DIR/data, $WEIGHTS, 32x32 crops, $PRECISION, device=$DEVICE (short CPU schedule: 2 epochs, one cosine decay from lr 3e-4, --feature_lr_scale 0.1)"
HF_HUB_OFFLINE=1 python3 train.py \
  --dataset synthetic \
  --data_root "$DEMO_DIR/data" \
  --synthetic_refs 160 \
  --synthetic_size 32 \
  --split_ratio 3:1 \
  --crop_size 32 \
  --batch_size 16 \
  --learning_rate 3e-4 \
  --feature_lr_scale 0.1 \
  --T_max 0 \
  --n_epoch 2 \
  --time_limit 240 \
  --val_freq 1 \
  --val_crops center \
  --pretrained_backbones "$PRETRAINED" \
  --precision "$PRECISION" \
  --device "$DEVICE" \
  --checkpoints_dir "$DEMO_DIR/checkpoints" \
  --name demo \
  --progress false \
  "$@"
mkdir -p "$DEMO_DIR/pairs"
python3 - "$DEMO_DIR" <<'PY'
import shutil, sys
from pathlib import Path
demo = Path(sys.argv[1])
val = sorted(__import__("json").loads((demo / "checkpoints/demo/split.json").read_text())["splits"]["val"])[0].upper()
for p in sorted((demo / "data/Train_Dis").glob(f"{val}_0[0-5]_03.bmp")):
    shutil.copy(p, demo / "pairs" / p.name)
PY
HF_HUB_OFFLINE=1 python3 score.py \
  --ref "$DEMO_DIR/data/Train_Ref" \
  --dist "$DEMO_DIR/pairs" \
  --checkpoint "$DEMO_DIR/checkpoints/demo/best.pth" \
  --pretrained_backbones "$PRETRAINED" \
  --crop_size 32 \
  --crops center \
  --device "$DEVICE" \
  --output "$DEMO_DIR/pairs_scores.csv" 2>/dev/null
python3 - "$DEMO_DIR" "$WEIGHTS" "$PRECISION" <<'PY'
import json, sys, torch
run = f"{sys.argv[1]}/checkpoints/demo"
ckpt = torch.load(f"{run}/best.pth", map_location="cpu", weights_only=True)
m = ckpt["best"]
splits = json.load(open(f"{run}/split.json"))["splits"]
data = f"synthetic set, {len(splits['train']) + len(splits['val'])} refs of 32x32, {len(splits['val'])} held-out refs"
print(f"demo: val SRCC={m['SRCC']:.4f} PLCC={m['PLCC']:.4f} ({data}; {sys.argv[2]}, {sys.argv[3]}, epoch {m['epoch']})")
PY
