#!/usr/bin/env sh
# Score the NTIRE 2022 PIPAL validation folders (or any folder pair) and write the results and submission zip.
#   sh test.sh [DATA_ROOT] [extra test.py options...]
# Folders: $REF_DIR and $DIST_DIR, by default $DATA_ROOT/NTIRE2022_FR_Valid_Ref and .../NTIRE2022_FR_Valid_Dis
# (for the test phase: REF_DIR=$DATA_ROOT/NTIRE2022_FR_Testing_Ref DIST_DIR=$DATA_ROOT/NTIRE2022_FR_Testing_Dis).
# Checkpoint: $CHECKPOINT, by default the released one that download.sh fetches.
set -eu
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then DATA_ROOT=$1; shift; fi
DATA_ROOT=${DATA_ROOT:-./datasets/PIPAL}
REF_DIR=${REF_DIR:-$DATA_ROOT/NTIRE2022_FR_Valid_Ref}
DIST_DIR=${DIST_DIR:-$DATA_ROOT/NTIRE2022_FR_Valid_Dis}
CHECKPOINT=${CHECKPOINT:-checkpoints/ahiq_pipal/AHIQ_vit_p8_epoch33-da3ea303.pth}
exec python3 test.py \
  --name ahiq_pipal \
  --checkpoint "$CHECKPOINT" \
  --ref_dir "$REF_DIR" \
  --dist_dir "$DIST_DIR" \
  --crops random:20 \
  --seed 1919 \
  --crop_size 224 \
  --batch_size 4 \
  --output checkpoints/ahiq_pipal/results.txt \
  --ntire_zip checkpoints/ahiq_pipal/submission.zip \
  "$@"
