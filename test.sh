#!/usr/bin/env sh
# Score the NTIRE 2022 PIPAL validation folders (or any folder pair) and write the results and submission zip.
#   sh test.sh [DATA_ROOT] [extra test.py options...]
#   NPROC=4 sh test.sh [DATA_ROOT]       the same on 4 GPUs of this machine (torchrun; the ranks share the pairs)
# Folders: $REF_DIR and $DIST_DIR, by default $DATA_ROOT/NTIRE2022_FR_Valid_Ref and .../NTIRE2022_FR_Valid_Dis
# (for the test phase: REF_DIR=$DATA_ROOT/NTIRE2022_FR_Testing_Ref DIST_DIR=$DATA_ROOT/NTIRE2022_FR_Testing_Dis).
# Checkpoint: $CHECKPOINT, by default test.py's: the released one, which `sh download.sh` fetches.
# A stopped run continues where it stopped when started again with the same settings (results.txt.journal).
set -eu
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then DATA_ROOT=$1; shift; fi
DATA_ROOT=${DATA_ROOT:-./datasets/PIPAL}
REF_DIR=${REF_DIR:-$DATA_ROOT/NTIRE2022_FR_Valid_Ref}
DIST_DIR=${DIST_DIR:-$DATA_ROOT/NTIRE2022_FR_Valid_Dis}
LAUNCH=python3
if [ "${NPROC:-1}" -gt 1 ]; then LAUNCH="torchrun --standalone --nproc_per_node $NPROC"; fi
exec $LAUNCH "$(dirname "$0")/test.py" \
  ${CHECKPOINT:+--checkpoint "$CHECKPOINT"} \
  --ref_dir "$REF_DIR" \
  --dist_dir "$DIST_DIR" \
  --crops random:20 \
  --seed 1919 \
  --crop_size 224 \
  --output checkpoints/ahiq_pipal/results.txt \
  --ntire_zip checkpoints/ahiq_pipal/submission.zip \
  "$@"
