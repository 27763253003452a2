#!/usr/bin/env sh
# Train AHIQ in the NTIRE 2022 setting on PIPAL (the authors' defaults: ViT-B/8 blocks 1-5 + ResNet-50 layer1,
# crop 224, batch 4, Adam 1e-4, cosine T_max 50 per iteration, 200 epochs, seed 1919): options/presets/ntire2022.json.
#   sh train.sh [DATA_ROOT] [extra train.py options...]      e.g. sh train.sh /data/PIPAL --n_epoch 50
# DATA_ROOT (or the first argument) is the PIPAL training folder holding Train_Ref/, Train_Dis/ (or
# Distortion_1..4/) and Train_Label/. Validation: a reference-disjoint tenth of the training references,
# unless you pass --val_list LIST --val_ref_dir REF --val_dis_dir DIS. Multi-GPU: NPROC=4 sh train.sh ...
set -eu
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then DATA_ROOT=$1; shift; fi
DATA_ROOT=${DATA_ROOT:-./datasets/PIPAL}
LAUNCH=python3
if [ "${NPROC:-1}" -gt 1 ]; then LAUNCH="torchrun --standalone --nproc_per_node $NPROC"; fi
# The options are options/presets/ntire2022.json; flags after it (and "$@") override them.
exec $LAUNCH "$(dirname "$0")/train.py" \
  --config "$(dirname "$0")/options/presets/ntire2022.json" \
  --data_root "$DATA_ROOT" \
  "$@"
