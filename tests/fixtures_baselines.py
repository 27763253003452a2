"""A small labelled KADID-10k tree: the real mini subset (I01 and 4 real distorted images) plus generated
references I02..I06, each with KADID's types 01 (Gaussian blur), 10 (JPEG) and 11 (white noise) at levels 1-5,
named as the release names them and labelled with the real dmos.csv scores of those names (when the shared
label files are there, else a falling score per level)."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from tests import fixtures_standard as fs

GENERATED_TYPES = ("01", "10", "11")


def _distort(img: np.ndarray, kind: str, level: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "01":
        return cv2.GaussianBlur(img, (0, 0), 0.6 * level)
    if kind == "10":
        ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, (60, 40, 25, 15, 8)[level - 1]])
        return cv2.imdecode(data, cv2.IMREAD_COLOR)
    return np.clip(img + rng.normal(0, 4 * level, img.shape), 0, 255).astype(np.uint8)


def build_kadid_mixed(root: Path, mini: Path, refs: int = 5, size: tuple[int, int] = (64, 96)) -> Path:
    images = root / "images"
    images.mkdir(parents=True)
    for f in (mini / "images").iterdir():
        shutil.copy(f, images / f.name)
    rows = (mini / "dmos.csv").read_text().splitlines()[1:]
    real = {r[0]: ",".join(r) for r in fs.kadid10k_rows()}
    rng = np.random.default_rng(0)
    for k in range(2, 2 + refs):
        ref = np.clip(cv2.GaussianBlur(rng.random((*size, 3)).astype(np.float32), (0, 0), 2) * 600 - 172, 0, 255)
        ref = ref.astype(np.uint8)
        cv2.imwrite(str(images / f"I{k:02d}.png"), ref)
        for kind in GENERATED_TYPES:
            for level in range(1, 6):
                name = f"I{k:02d}_{kind}_{level:02d}.png"
                cv2.imwrite(str(images / name), _distort(ref, kind, level, rng))
                rows.append(real.get(name, f"{name},I{k:02d}.png,{5 - 0.7 * level:.2f},0.5"))
    (root / "dmos.csv").write_text("dist_img,ref_img,dmos,var\n" + "\n".join(rows) + "\n")
    return root
