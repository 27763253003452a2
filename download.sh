#!/usr/bin/env sh
# Fetch the released AHIQ checkpoint and the two backbone weight files it was trained with.
#   sh download.sh            (idempotent: a file already in place whose SHA-256 checks is kept, not fetched again)
# Puts them where score.py, test.py, train.py and AHIQLoss look (the released checkpoint is their default):
#   checkpoints/ahiq_pipal/AHIQ_vit_p8_epoch33-da3ea303.pth                       (the authors' PIPAL model, pyiqa's mirror)
#   checkpoints/backbones/vit_base_patch8_224.augreg_in21k_ft_in1k.safetensors    (timm tag, Hugging Face hub)
#   checkpoints/backbones/resnet50.a1_in1k.safetensors                            (timm tag, Hugging Face hub)
# SHA-256 checks: the checkpoint against the 8 hex digits its name carries (the only sum published for it), each
# backbone against the SHA-256 the hub publishes for the file, and every file, on later runs, against
# checkpoints/SHA256SUMS, written here after the first good download. Offline, each file that could not be
# fetched gets one line saying how to place it by hand, and the script exits 1.
set -u
cd "$(dirname "$0")"
AHIQ_FILE=$(python3 -c "from ahiq.models.config import RELEASED_CHECKPOINT as p; import os; print(os.path.relpath(p))") ||
  { echo "failed: python3 with this project's requirements is needed (pip install -r requirements.txt)"; exit 1; }
AHIQ_URL=$(python3 -c "from ahiq.models.config import RELEASED_URL as u; print(u)")
AHIQ_SHA_PREFIX=$(basename "$AHIQ_FILE" .pth | sed 's/.*-//')   # da3ea303
SUMS=checkpoints/SHA256SUMS
status=0

sha() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }
recorded() { [ -f "$SUMS" ] && grep "  $1\$" "$SUMS" | cut -d' ' -f1; }
record() {  # remember the file's sum (replacing an older line for it)
  { [ -f "$SUMS" ] && grep -v "  $2\$" "$SUMS"; echo "$1  $2"; } > "$SUMS.part" && mv "$SUMS.part" "$SUMS"
}
intact() {  # the file is there and its sum is the recorded one (or, before any record, starts with $2)
  [ -f "$1" ] || return 1
  want=$(recorded "$1")
  have=$(sha "$1")
  if [ -n "$want" ]; then [ "$have" = "$want" ]; else [ -n "$2" ] && [ "${have#"$2"}" != "$have" ]; fi
}

mkdir -p checkpoints/ahiq_pipal checkpoints/backbones
if intact "$AHIQ_FILE" "$AHIQ_SHA_PREFIX"; then
  echo "ok: $AHIQ_FILE (sha256 $(sha "$AHIQ_FILE"))"
  [ -n "$(recorded "$AHIQ_FILE")" ] || record "$(sha "$AHIQ_FILE")" "$AHIQ_FILE"
else
  tmp="$AHIQ_FILE.part"
  if { command -v curl >/dev/null && curl -fsL --retry 2 --connect-timeout 15 -o "$tmp" "$AHIQ_URL" 2>/dev/null; } ||
     { command -v wget >/dev/null && wget -q -T 15 -O "$tmp" "$AHIQ_URL" 2>/dev/null; }; then
    if [ "$(sha "$tmp" | cut -c1-8)" = "$AHIQ_SHA_PREFIX" ]; then
      mv "$tmp" "$AHIQ_FILE" && record "$(sha "$AHIQ_FILE")" "$AHIQ_FILE" && echo "fetched: $AHIQ_FILE"
    else
      rm -f "$tmp"; status=1
      echo "failed: $AHIQ_FILE: the downloaded file's SHA-256 does not start with $AHIQ_SHA_PREFIX; try again"
    fi
  else
    rm -f "$tmp"; status=1
    echo "failed: $AHIQ_FILE: could not download $AHIQ_URL; fetch it elsewhere and copy it to $AHIQ_FILE"
  fi
fi

for TAG in vit_base_patch8_224.augreg_in21k_ft_in1k resnet50.a1_in1k; do
  DEST="checkpoints/backbones/$TAG.safetensors"
  if [ -n "$(recorded "$DEST")" ] && intact "$DEST" ""; then
    echo "ok: $DEST (sha256 $(sha "$DEST"))"
    continue
  fi
  if python3 - "$TAG" "$DEST" 2>/dev/null <<'PY'
import hashlib, os, shutil, socket, sys
if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
    sys.exit(1)  # the user asked for no hub access
socket.create_connection(("huggingface.co", 443), timeout=10).close()  # fail fast offline, no retry loop
from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
tag, dest = sys.argv[1], sys.argv[2]
published = get_hf_file_metadata(hf_hub_url(f"timm/{tag}", "model.safetensors")).etag.strip('"')  # LFS: its SHA-256
path = hf_hub_download(f"timm/{tag}", "model.safetensors")   # also fills the hub cache
digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
if len(published) == 64 and digest != published:
    sys.exit(f"{path}: SHA-256 {digest} is not the hub's {published}")
shutil.copyfile(path, dest + ".part")
os.replace(dest + ".part", dest)
PY
  then
    record "$(sha "$DEST")" "$DEST" && echo "fetched: $DEST (sha256 $(sha "$DEST"), the hub's)"
  elif [ -s "$DEST" ] && [ -z "$(recorded "$DEST")" ]; then
    rm -f "$DEST.part"
    echo "kept: $DEST (placed here before; its SHA-256 could not be checked against the hub's now)"
  else
    rm -f "$DEST.part"; status=1
    echo "failed: $DEST: no access to the Hugging Face hub; download timm/$TAG model.safetensors elsewhere and copy it to $DEST (or pass --vit_weights/--cnn_weights FILE)"
  fi
done
exit $status
