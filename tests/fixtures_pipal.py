"""PIPAL trees in the distributed layouts, named from the real label files (or a small in-repo sample)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from tests.conftest import SHARED

REAL_LABELS = SHARED / "data" / "labels" / "PIPAL" / "Train_Label"
# Fallback when ../shared is absent: real lines of three references (names and Elo scores of PIPAL).
SAMPLE = {
    "A0001": ["A0001_00_00.bmp,1520.0648", "A0001_00_01.bmp,1437.0798", "A0001_00_02.bmp,1546.0616"],
    "A0002": ["A0002_00_00.bmp,1484.2163", "A0002_01_03.bmp,1211.5519", "A0002_10_07.bmp,1390.7402"],
    "A0006": ["A0006_02_01.bmp,1301.1223", "A0006_05_04.bmp,1602.4471", "A0006_11_12.bmp,1088.3071"],
}


def label_files(limit: int | None = None) -> dict[str, str]:
    """``{ref id: label file text}`` from the real files when present, else the sample."""
    if REAL_LABELS.is_dir():
        files = sorted(REAL_LABELS.glob("*.txt"))[:limit]
        return {f.stem: f.read_text() for f in files}
    return {ref: "\n".join(lines) + "\n" for ref, lines in list(SAMPLE.items())[:limit]}


def build_pipal(root: Path, labels: dict[str, str], layout: str = "Train_Dis", size: int = 32) -> list[str]:
    """Write ``Train_Ref/``, ``Train_Dis/`` (or ``Distortion_1..4/``) and ``Train_Label/`` under ``root``.

    Every image is a hard link to one small BMP, so 23,400 files cost a second. Returns the distorted names.
    """
    img = (np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)
    (root / "Train_Label").mkdir(parents=True)
    (root / "Train_Ref").mkdir()
    source = root / "source.bmp"
    cv2.imwrite(str(source), img)
    names = []
    for ref, text in labels.items():
        (root / "Train_Label" / f"{ref}.txt").write_text(text)
        os.link(source, root / "Train_Ref" / f"{ref}.bmp")
        names += [line.split(",")[0] for line in text.splitlines() if line.strip()]
    folders = [root / "Train_Dis"] if layout == "Train_Dis" else [root / f"Distortion_{k}" for k in range(1, 5)]
    for folder in folders:
        folder.mkdir()
    for k, name in enumerate(names):
        os.link(source, folders[k * len(folders) // len(names)] / name)
    source.unlink()
    return names


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, copy_function=os.link)
