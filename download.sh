#!/usr/bin/env sh
# Fetch the released AHIQ checkpoint and the two backbone weight files it was trained with.
#   sh download.sh            (idempotent: files already in place and intact are kept)
# Puts:
#   checkpoints/ahiq_pipal/AHIQ_vit_p8_epoch33-da3ea303.pth                       (the authors' PIPAL model, pyiqa's mirror)
#   checkpoints/backbones/vit_base_patch8_224.augreg_in21k_ft_in1k.safetensors    (timm tag, Hugging Face hub)
#   checkpoints/backbones/resnet50.a1_in1k.safetensors                            (timm tag, Hugging Face hub)
# score.py, test.py and train.py look in checkpoints/backbones/ before the hub. Offline, each file that could
# not be fetched gets one line saying how to place it by hand, and the script exits 1.
set -u
cd "$(dirname "$0")"
status=0
AHIQ_URL="https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/AHIQ_vit_p8_epoch33-da3ea303.pth"
AHIQ_FILE="checkpoints/ahiq_pipal/AHIQ_vit_p8_epoch33-da3ea303.pth"
AHIQ_SHA_PREFIX="da3ea303"   # the file name carries the first 8 hex digits of its SHA-256

sha_ok() { [ "$(sha256sum "$1" 2>/dev/null | cut -c1-8)" = "$2" ]; }

mkdir -p checkpoints/ahiq_pipal checkpoints/backbones
if [ -f "$AHIQ_FILE" ] && sha_ok "$AHIQ_FILE" "$AHIQ_SHA_PREFIX"; then
  echo "ok: $AHIQ_FILE (sha256 $AHIQ_SHA_PREFIX...)"
else
  tmp="$AHIQ_FILE.part"
  if { command -v curl >/dev/null && curl -fsL --retry 2 --connect-timeout 15 -o "$tmp" "$AHIQ_URL" 2>/dev/null; } ||
     { command -v wget >/dev/null && wget -q -T 15 -O "$tmp" "$AHIQ_URL" 2>/dev/null; }; then
    if sha_ok "$tmp" "$AHIQ_SHA_PREFIX"; then
      mv "$tmp" "$AHIQ_FILE" && echo "fetched: $AHIQ_FILE"
    else
      rm -f "$tmp"; status=1
      echo "failed: $AHIQ_FILE: downloaded file has the wrong SHA-256 (want $AHIQ_SHA_PREFIX...); try again"
    fi
  else
    rm -f "$tmp"; status=1
    echo "failed: $AHIQ_FILE: could not download $AHIQ_URL; fetch it elsewhere and copy it to $AHIQ_FILE"
  fi
fi

for TAG in vit_base_patch8_224.augreg_in21k_ft_in1k resnet50.a1_in1k; do
  DEST="checkpoints/backbones/$TAG.safetensors"
  if [ -s "$DEST" ]; then
    echo "ok: $DEST"
    continue
  fi
  if python3 - "$TAG" "$DEST" 2>/dev/null <<'PY'
import os, shutil, socket, sys
if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
    sys.exit(1)  # the user asked for no hub access
socket.create_connection(("huggingface.co", 443), timeout=10).close()  # fail fast offline, no retry loop
from huggingface_hub import hf_hub_download
tag, dest = sys.argv[1], sys.argv[2]
path = hf_hub_download(f"timm/{tag}", "model.safetensors")   # also fills the hub cache
from safetensors.torch import load_file
load_file(path)                                               # refuses a truncated or corrupt file
shutil.copyfile(path, dest + ".part")
os.replace(dest + ".part", dest)
PY
  then
    echo "fetched: $DEST"
  else
    rm -f "$DEST.part"; status=1
    echo "failed: $DEST: no access to the Hugging Face hub; download timm/$TAG model.safetensors elsewhere and copy it to $DEST (or pass --vit_weights/--cnn_weights FILE)"
  fi
done
exit $status
