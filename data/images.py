"""Image files: decoding, header sizes, and pairing distorted images with their references."""
from __future__ import annotations

import functools
import os
import struct
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from ahiq.utils.errors import UserError, arg
from ahiq.utils.inputs import reading

IMAGE_SUFFIXES = {".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


# EXIF orientation -> how to turn the stored pixels (H, W, C) into what image viewers show.
_ORIENT = {
    2: lambda a: a[:, ::-1],                       # mirrored left-right
    3: lambda a: a[::-1, ::-1],                    # rotated 180
    4: lambda a: a[::-1],                          # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),             # transposed
    6: lambda a: a.transpose(1, 0, 2)[:, ::-1],    # stored rotated 90 counter-clockwise: turn clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # transversed
    8: lambda a: a.transpose(1, 0, 2)[::-1],       # stored rotated 90 clockwise: turn counter-clockwise
}
_DECODE = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION  # orientation: ours, below


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says: ``(height, width)`` as viewers show it (EXIF orientation applied), the EXIF
    orientation (1 = none), and whether it has an alpha channel."""

    height: int
    width: int
    orientation: int = 1
    alpha: bool = False


def _open_error(path: Path) -> UserError:
    return UserError(f"{path}: cannot decode image; is it a valid image file?")


def read_header(path: str | os.PathLike, decode: bool = False) -> ImageHeader:
    """The :class:`ImageHeader` of ``path``; with ``decode`` a JPEG is decoded in full too and a PNG's chunks are
    verified (PIL): that finds the truncated JPEG body OpenCV lets pass, and the damaged PNG that libpng would
    report on stderr in its own words (for other formats :func:`read_image` fails on damage)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: image not found")
    try:
        with Image.open(path) as img:
            width, height = img.size
            # PIL's PNG getexif() decodes the whole file to look for an eXIf chunk after the pixels; one before
            # them is already in img.info (where image viewers look too).
            has_exif = img.format != "PNG" or "exif" in img.info
            orientation = int(img.getexif().get(0x0112, 1) or 1) if has_exif else 1
            alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
            if decode and img.format in ("JPEG", "MPO"):
                img.load()  # OpenCV fills a truncated JPEG with grey and says nothing; PIL raises
            elif decode and img.format == "PNG":
                img.verify()  # chunk CRCs and the end of the stream, without decoding the pixels
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, struct.error, zlib.error,
            Image.DecompressionBombError):  # what PIL raises for bad, truncated or huge files
        raise _open_error(path) from None
    orientation = orientation if orientation in _ORIENT else 1
    if orientation >= 5:
        width, height = height, width
    return ImageHeader(height, width, orientation, alpha)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to RGB ``(H, W, 3)`` as image viewers show it (EXIF orientation applied).

    8-bit files give ``uint8``; 16-bit files give ``float32`` in [0, 1] (value / 65535, full depth kept).
    Grey images are repeated to 3 channels; an alpha channel is ignored (screening says so once per run).
    """
    path = Path(path)
    reading(path)  # an input of the run: no write of it may land here (utils.inputs)
    header = read_header(path)
    _quiet_opencv()
    img = cv2.imread(str(path), _DECODE)
    if img is None:
        raise _open_error(path)
    if img.dtype not in (np.uint8, np.uint16):
        raise UserError(f"{path}: {img.dtype} pixels; give 8-bit or 16-bit images")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if header.orientation != 1:
        img = np.ascontiguousarray(_ORIENT[header.orientation](img))
    if img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535
    return img


@functools.cache
def _quiet_opencv() -> None:
    """OpenCV settings for decoding, made once: no thread pool of its own (decoding runs in DataLoader workers and
    screening threads, which it would oversubscribe), and no log lines for files it cannot read (we say so, in
    one line)."""
    cv2.setNumThreads(0)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)


def as_unit_float(image):
    """A ``uint8`` image (array or tensor) as float32 in [0, 1]; float images unchanged. Used where images of
    both depths meet in one batch."""
    if isinstance(image, torch.Tensor):
        return image.float() / 255 if image.dtype == torch.uint8 else image
    return image.astype(np.float32) / 255 if image.dtype == np.uint8 else image


def common_depth(images: Sequence) -> list:
    """``images`` (arrays or tensors) as they are when they share a dtype; when 8-bit and 16-bit images meet
    (uint8 beside float), all of them as float32 in [0, 1] (:func:`as_unit_float`), so they stack."""
    images = list(images)
    return images if len({img.dtype for img in images}) <= 1 else [as_unit_float(img) for img in images]


def list_images(folder: Path) -> tuple[list[Path], list[str]]:
    """The image files of ``folder`` (sorted), and one ``name (why)`` for each entry left out that could have been
    meant as one: a broken or looping link, something that is not a regular file, an unreadable file, another
    format. Sub-folders are not entries."""
    images, skipped = [], []
    for p in sorted(folder.iterdir()):
        if p.is_dir():
            continue
        why = ("broken or looping link" if p.is_symlink() and not p.exists() else
               "not a regular file" if not p.is_file() else
               f"not an image format we read ({p.suffix or 'no suffix'})" if not is_image(p) else
               "unreadable (permissions)" if not os.access(p, os.R_OK) else None)
        if why is None:
            images.append(p)
        else:
            skipped.append(f"{p.name} ({why})")
    return images, skipped


def reference_name(name: str) -> str:
    """The reference stem the datasets' naming rule gives a distorted file name: the part before the first
    underscore, as written. ``A0001_00_00.bmp`` -> ``A0001`` (PIPAL), ``i03_11_5.bmp`` -> ``i03`` (TID2013),
    ``I01_01_01.png`` -> ``I01`` (KADID-10k). The one rule used by every loader and the folder pairing."""
    return Path(name).stem.split("_")[0]


def reference_stem(name: str) -> str:
    """:func:`reference_name` in lower case, for case-insensitive matching."""
    return reference_name(name).lower()


def note_skipped(folder: Path, skipped: list[str]) -> None:
    """One line on stderr for the entries a folder scan left out (:func:`list_images`), the first five named."""
    if skipped:
        print(f"note: left out {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} of {folder}: "
              f"{'; '.join(skipped[:5])}{'; ...' if len(skipped) > 5 else ''}", file=sys.stderr)


def pair_paths(ref: str | os.PathLike, dist: str | os.PathLike) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pair distorted images with references: ``(pairs, problems)``, pairs as ``(dist, ref)`` sorted.

    ``ref`` and ``dist`` are files or folders. Folders pair by identical file name, else by
    :func:`reference_stem` matched case-insensitively. A distorted file that pairs with nothing is a problem;
    folder entries that are no images we read are named in one note (:func:`note_skipped`).
    """
    ref, dist = Path(ref), Path(dist)
    for path, name in ((ref, "ref"), (dist, "dist")):
        if not path.exists():
            raise UserError(f"{arg(name)}{path}: no such file or folder")
    dist_files, skipped = list_images(dist) if dist.is_dir() else ([dist], [])
    note_skipped(dist, skipped)
    if dist.is_dir() and not dist_files:
        raise UserError(f"{arg('dist')}{dist}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if ref.is_file():  # a reference inside the distorted folder is not its own pair; a file named twice is
        return sorted((d, ref) for d in dist_files if d != ref or not dist.is_dir()), []
    refs, ref_skipped = list_images(ref)
    if ref.resolve() != dist.resolve():
        note_skipped(ref, ref_skipped)
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
                            f"name it like its reference or give {arg('ref')}FILE")
        elif match.resolve() != d.resolve():
            pairs.append((d, match))
    return sorted(pairs), problems
