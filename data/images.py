"""Image files: decoding, header sizes, and pairing distorted images with their references."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from utils.errors import UserError

IMAGE_SUFFIXES = {".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}

cv2.setNumThreads(0)  # decoding runs inside DataLoader workers; OpenCV's own pool would oversubscribe


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to RGB ``uint8`` ``(H, W, 3)`` (grey images are repeated to 3 channels)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: image not found")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"{path}: cannot decode image; is it a valid image file?")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` from the file header, without decoding the pixels."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: image not found")
    try:
        with Image.open(path) as img:
            width, height = img.size
    except Exception:  # PIL raises several unrelated types for bad files
        raise UserError(f"{path}: cannot decode image header; is it a valid image file?") from None
    return height, width


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image(p))


def reference_name(name: str) -> str:
    """The reference stem the datasets' naming rule gives a distorted file name: the part before the first
    underscore, as written. ``A0001_00_00.bmp`` -> ``A0001`` (PIPAL), ``i03_11_5.bmp`` -> ``i03`` (TID2013),
    ``I01_01_01.png`` -> ``I01`` (KADID-10k). The one rule used by every loader and the folder pairing."""
    return Path(name).stem.split("_")[0]


def reference_stem(name: str) -> str:
    """:func:`reference_name` in lower case, for case-insensitive matching."""
    return reference_name(name).lower()


def pair_paths(ref: str | os.PathLike, dist: str | os.PathLike) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pair distorted images with references; returns ``(pairs, problems)``, pairs as ``(dist, ref)`` sorted.

    ``ref`` and ``dist`` are files or folders. Folders pair by identical file name, else by
    :func:`reference_stem` matched case-insensitively. A distorted file that pairs with nothing is a problem.
    """
    ref, dist = Path(ref), Path(dist)
    for path, flag in ((ref, "--ref"), (dist, "--dist")):
        if not path.exists():
            raise UserError(f"{flag} {path}: no such file or folder")
    dist_files = list_images(dist) if dist.is_dir() else [dist]
    if dist.is_dir() and not dist_files:
        raise UserError(f"--dist {dist}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if ref.is_file():
        return sorted((d, ref) for d in dist_files if d != ref), []
    refs = list_images(ref)
    by_name = {p.name: p for p in refs}
    by_stem: dict[str, Path] = {}
    for p in refs:
        by_stem.setdefault(p.stem.lower(), p)
    pairs, problems = [], []
    for d in dist_files:
        match = by_name.get(d.name) if ref.resolve() != d.parent.resolve() else None
        match = match or by_stem.get(reference_stem(d.name))
        if match is None:
            problems.append(f"{d}: no reference in {ref} (tried {d.name} and {reference_stem(d.name)}.*); "
                            "name it like its reference or give --ref FILE")
        elif match.resolve() != d.resolve():
            pairs.append((d, match))
    return sorted(pairs), problems
