"""Image files: decoding as viewers show them within a pixel budget, header sizes, and the pairing rule."""
from __future__ import annotations

import functools
import io
import os
import struct
import unicodedata
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ahiq.utils.errors import UserError, arg, note
from ahiq.utils.inputs import reading

IMAGE_SUFFIXES = {".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
# The pixel budget per image, checked from the header: at 18 bytes a pixel (16-bit RGB + float32) about 1 GB.
MAX_MEGAPIXELS = 50.0
# PIL refuses more than this many pixels whatever we allow (twice Image.MAX_IMAGE_PIXELS): the budget's ceiling.
PIL_LIMIT_MEGAPIXELS = 178.0
DECODED_BYTES_PER_PIXEL = 18


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def megapixels(max_megapixels: float | None) -> int | None:
    return None if max_megapixels is None else int(max_megapixels * 1_000_000)


MAX_PIXELS = megapixels(MAX_MEGAPIXELS)  # the default budget, in pixels


# EXIF orientation -> how to turn the stored pixels (H, W, C) into what image viewers show (PIL's exif_transpose).
_ORIENT = {
    2: lambda a: a[:, ::-1],                       # mirrored left-right
    3: lambda a: a[::-1, ::-1],                    # rotated 180
    4: lambda a: a[::-1],                          # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),             # transposed
    6: lambda a: a.transpose(1, 0, 2)[:, ::-1],    # stored rotated 90 counter-clockwise: turn clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # transversed
    8: lambda a: a.transpose(1, 0, 2)[::-1],       # stored rotated 90 clockwise: turn counter-clockwise
}


@dataclass(frozen=True)
class ImageHeader:
    """A file's header: size as viewers show it (EXIF orientation applied), orientation, alpha, frames."""

    height: int
    width: int
    orientation: int = 1
    alpha: bool = False
    frames: int = 1


def _open_error(path: Path) -> UserError:
    return UserError(f"{path}: cannot decode image; is it a valid image file?")


def folder_names(folder: Path) -> dict[str, list[str]]:
    """The names in ``folder`` by :func:`name_key`, in listing order (``{}`` where it cannot be listed)."""
    names: dict[str, list[str]] = {}
    try:
        for p in folder.iterdir() if folder.is_dir() else ():
            names.setdefault(name_key(p.name), []).append(p.name)
    except OSError:
        return {}
    return names


def image_not_found(path: Path, names: dict[str, list[str]] | None = None) -> UserError:
    """"Image not found", naming a file of the folder whose name differs only in case or Unicode normalisation
    (``names``: :func:`folder_names` of the folder, when the caller lists it once for many files)."""
    folder = path.parent
    names = folder_names(folder) if names is None else names
    near = [name for name in names.get(name_key(path.name), []) if name != path.name]
    if near:
        return UserError(f"{path}: image not found; {folder} holds {near[0]!r}, a name that differs "
                         f"{difference(path.name, near[0])}: rename the file or the name that lists it")
    return UserError(f"{path}: image not found")


# PIL's size warning says what the budget says; process-wide, as catch_warnings is not thread-safe.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _header(img: Image.Image, path: Path, max_pixels: int | None) -> ImageHeader:
    width, height = img.size
    if img.format == "TIFF":  # newer PIL reports a TIFF's size with its orientation applied: take the stored one
        width, height = int(img.tag_v2.get(256, width)), int(img.tag_v2.get(257, height))
    if max_pixels is not None and width * height > max_pixels:
        raise UserError(f"{path}: {width}x{height} is {width * height / 1e6:.1f} megapixels, over the budget of "
                        f"{max_pixels / 1e6:g} per image (decoding would take up to "
                        f"{width * height * DECODED_BYTES_PER_PIXEL / 2**30:.1f} GiB); give a larger "
                        f"{arg('max_megapixels')}value (up to {PIL_LIMIT_MEGAPIXELS:g}) or a smaller image")
    # PIL's PNG getexif() decodes the whole file for an eXIf chunk after the pixels; viewers read img.info's.
    has_exif = img.format != "PNG" or "exif" in img.info
    orientation = int(img.getexif().get(0x0112, 1) or 1) if has_exif else 1
    alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    orientation = orientation if orientation in _ORIENT else 1
    if orientation >= 5:
        width, height = height, width
    return ImageHeader(height, width, orientation, alpha, int(getattr(img, "n_frames", 1) or 1))


# What PIL raises for bad, truncated or huge files.
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, struct.error, zlib.error)


def _open(source, path: Path, max_pixels: int | None, check_body: bool = False) -> tuple[ImageHeader, bool]:
    """The header of ``source`` (``path`` or its bytes) and whether it is a TIFF; ``check_body``: PIL decodes a JPEG in
    full and verifies a PNG's chunks, finding damage OpenCV lets pass."""
    try:
        with Image.open(source) as img:
            header = _header(img, path, max_pixels)
            if check_body and img.format in ("JPEG", "MPO"):
                img.load()  # OpenCV fills a truncated JPEG with grey and says nothing; PIL raises
            elif check_body and img.format == "PNG":
                img.verify()  # chunk CRCs and the end of the stream, without decoding the pixels
            return header, img.format == "TIFF"
    except Image.DecompressionBombError:  # over PIL's own ceiling, which no budget lifts
        raise UserError(f"{path}: over {PIL_LIMIT_MEGAPIXELS:g} megapixels, more than any pixel budget allows "
                        f"({arg('max_megapixels')}at most {PIL_LIMIT_MEGAPIXELS:g}); give a smaller image") from None
    except _PIL_ERRORS:
        raise _open_error(path) from None


def read_header(path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS) -> ImageHeader:
    """The :class:`ImageHeader` of ``path``; over ``max_pixels`` (None: no budget) a :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise image_not_found(path)
    return _open(path, path, max_pixels)[0]


def _tiff_without_orientation(data: bytes) -> bytes:
    """A TIFF's bytes with orientation 1: OpenCV applies a TIFF's orientation whatever IMREAD_IGNORE_ORIENTATION says."""
    order = "<" if data[:2] == b"II" else ">"
    big = struct.unpack(order + "H", data[2:4])[0] == 43  # BigTIFF: 8-byte offsets, 20-byte entries
    count_fmt, entry, offset = ("Q", 20, struct.unpack(order + "Q", data[8:16])[0]) if big else \
        ("H", 12, struct.unpack(order + "I", data[4:8])[0])
    count_size = struct.calcsize(count_fmt)
    (count,) = struct.unpack(order + count_fmt, data[offset:offset + count_size])
    out = bytearray(data)
    for k in range(count):
        at = offset + count_size + k * entry
        tag, kind = struct.unpack(order + "HH", data[at:at + 4])
        if tag == 0x0112 and kind == 3:  # SHORT, stored in the entry itself
            value_at = at + (12 if big else 8)
            out[value_at:value_at + 2] = struct.pack(order + "H", 1)
    return bytes(out)


def decode_image(path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS,
                 check_body: bool = False) -> tuple[ImageHeader, np.ndarray]:
    """The header and pixels (:func:`read_image`) of ``path`` from one read; ``check_body`` as in :func:`_open`."""
    path = Path(path)
    reading(path)  # an input of the run: no write of it may land here (utils.inputs)
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise image_not_found(path) from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror}); check its permissions") from None
    header, tiff = _open(io.BytesIO(data), path, max_pixels, check_body)
    if tiff and header.orientation != 1:
        try:
            data = _tiff_without_orientation(data)
        except (struct.error, IndexError):
            raise _open_error(path) from None
    cv2 = _opencv()
    # From memory: OpenCV's imread crashes on names that are not UTF-8.
    img = cv2.imdecode(np.frombuffer(data, np.uint8),
                       cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION)
    del data
    if img is None:
        raise _open_error(path)
    if img.dtype not in (np.uint8, np.uint16):
        raise UserError(f"{path}: {img.dtype} pixels; give 8-bit or 16-bit images")
    stored = (header.width, header.height) if header.orientation >= 5 else (header.height, header.width)
    if img.shape[:2] != stored:
        raise UserError(f"{path}: decodes to {img.shape[1]}x{img.shape[0]}, its header says {stored[1]}x{stored[0]}; "
                        "re-save the image")
    cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)  # in place
    view = _ORIENT[header.orientation](img) if header.orientation != 1 else img
    if img.dtype == np.uint8:
        return header, np.ascontiguousarray(view)
    out = view.astype(np.float32)
    del img, view
    out /= 65535  # in place: the peak is the uint16 image and one float32 copy
    return header, out


def read_image(path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """An image file as viewers show it, RGB ``(H, W, 3)``: ``uint8``, or ``float32`` in [0, 1] from 16 bits.

    Grey is repeated to 3 channels, alpha ignored, an animation gives its first frame; over ``max_pixels`` is refused
    from the header (None: no budget)."""
    return decode_image(path, max_pixels)[1]


@functools.cache
def _opencv():
    """OpenCV, imported on the first decode, without a thread pool of its own (decoding runs in threads) or logs."""
    import cv2

    cv2.setNumThreads(0)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)
    return cv2


def as_unit_float(image):
    """A ``uint8`` image (array or tensor) as float32 in [0, 1]; float images unchanged."""
    if not isinstance(image, np.ndarray):  # a tensor (torch is imported only by those who pass one)
        import torch

        return image.float() / 255 if image.dtype == torch.uint8 else image
    return image.astype(np.float32) / 255 if image.dtype == np.uint8 else image


def common_depth(images: Sequence) -> list:
    """``images`` unchanged when they share a dtype, else all as float32 in [0, 1], so 8 and 16 bits stack."""
    images = list(images)
    return images if len({img.dtype for img in images}) <= 1 else [as_unit_float(img) for img in images]


def list_images(folder: Path) -> tuple[list[Path], list[str]]:
    """The image files of ``folder`` (sorted), and ``name (why)`` for each other entry."""
    images, skipped = [], []
    for p in sorted(folder.iterdir()):
        why = ("sub-folder, not searched" if p.is_dir() else
               "broken or looping link" if p.is_symlink() and not p.exists() else
               "not a regular file" if not p.is_file() else
               f"not an image format we read ({p.suffix or 'no suffix'})" if not is_image(p) else
               "unreadable (permissions)" if not os.access(p, os.R_OK) else None)
        if why is None:
            images.append(p)
        else:
            skipped.append(f"{p.name} ({why})")
    return images, skipped


def name_key(name: str) -> str:
    """A file name as pairing and label look-ups compare it: Unicode NFC (macOS writes NFD), lower case."""
    return unicodedata.normalize("NFC", name).lower()


def difference(a: str, b: str) -> str:
    """How two names with one :func:`name_key` differ: ``"only in case"`` or ``"only in Unicode normalisation (...)"``."""
    if unicodedata.normalize("NFC", a) == unicodedata.normalize("NFC", b):
        forms = ["composed (NFC)" if unicodedata.is_normalized("NFC", n) else "decomposed (NFD)" for n in (a, b)]
        return f"only in Unicode normalisation (one {forms[0]}, the other {forms[1]})"
    return "only in case"


def by_name_key(files: Iterable[Path], where: str | os.PathLike) -> dict[str, Path]:
    """``files`` keyed by :func:`name_key`; two with one key are a :class:`UserError` naming both."""
    found: dict[str, Path] = {}
    for p in files:
        other = found.setdefault(name_key(p.name), p)
        if other != p:
            both = (other.name, p.name) if other.parent == p.parent else (str(other), str(p))
            why = ("the same name in two folders" if other.name == p.name else
                   f"names that differ {difference(other.name, p.name)}")
            raise UserError(f"{where}: {both[0]!r} and {both[1]!r} are {why}, which names cannot tell "
                            "apart; rename or remove one")
    return found


def reference_name(name: str) -> str:
    """The reference stem of a distorted file name, the part before the first underscore: ``A0001_00_00.bmp`` ->
    ``A0001`` (PIPAL, TID2013 and KADID-10k name files so)."""
    return Path(name).stem.split("_")[0]


class References:
    """A folder's references: distorted file ``n`` pairs with the one named ``n`` or :func:`reference_name` of ``n``."""

    def __init__(self, folder: str | os.PathLike, files: Iterable[Path]):
        self.folder = Path(folder)
        self.by_name = by_name_key(files, folder)
        self.by_stem: dict[str, list[Path]] = {}
        for key, p in self.by_name.items():
            self.by_stem.setdefault(name_key(Path(key).stem), []).append(p)

    def candidates(self, name: str, itself: Path | None = None) -> list[Path]:
        """Every reference a distorted file ``name`` may pair with, ``itself`` (the distorted file) left out."""
        found = [self.by_name[name_key(name)]] if name_key(name) in self.by_name else []
        found += [p for p in self.by_stem.get(name_key(reference_name(name)), []) if p not in found]
        if itself is not None and found:
            me = itself.resolve()
            found = [p for p in found if p.resolve() != me]
        return found

    def find(self, name: str, itself: Path | None = None, where: str | os.PathLike | None = None) -> Path | None:
        """The one reference of distorted file ``name`` (None: none); more than one is a :class:`UserError`."""
        found = self.candidates(name, itself)
        if len(found) > 1:
            raise UserError(f"{where or name}: {len(found)} references fit it in {self.folder} "
                            f"({', '.join(repr(p.name) for p in found)}: the same name, or the part before the first "
                            "underscore, in any case); rename or remove all but one, or give "
                            f"{arg('ref')}FILE")
        return found[0] if found else None


def note_skipped(folder: Path, skipped: list[str]) -> None:
    if skipped:
        note(f"note: left out {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} of {folder}: "
             f"{'; '.join(skipped[:5])}{'; ...' if len(skipped) > 5 else ''}")


def match_folder(ref: Path, dist_files: list[Path]) -> list[tuple[Path, Path | None]]:
    """``(dist, its reference or None)`` per distorted file; a reference among them (one folder for both) is left out."""
    by_name_key(dist_files, dist_files[0].parent if dist_files else ref)  # two files no name tells apart
    refs, skipped = list_images(ref)
    if not dist_files or ref.resolve() != dist_files[0].parent.resolve():
        note_skipped(ref, skipped)
    index = References(ref, refs)
    matched = []
    for d in dist_files:
        match = index.find(d.name, itself=d, where=d)
        if match is not None or not index.candidates(d.name):  # else: d is a reference itself
            matched.append((d, match))
    return matched


def pair_paths(ref: str | os.PathLike, dist: str | os.PathLike) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pair distorted images (file or folder) with references (file or folder): sorted ``(dist, ref)`` pairs, and
    problems (a distorted file with no reference)."""
    ref, dist = Path(ref), Path(dist)
    for path, name in ((ref, "ref"), (dist, "dist")):
        if not path.exists():
            raise UserError(f"{arg(name)}{path}: no such file or folder")
    dist_files, skipped = list_images(dist) if dist.is_dir() else ([dist], [])
    note_skipped(dist, skipped)
    if dist.is_dir() and not dist_files:
        raise UserError(f"{arg('dist')}{dist}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if ref.is_file():  # a reference inside the distorted folder is not its own pair; a file named twice is
        by_name_key(dist_files, dist)
        return sorted((d, ref) for d in dist_files if d != ref or not dist.is_dir()), []
    pairs, problems = [], []
    for d, match in match_folder(ref, dist_files):
        if match is not None:
            pairs.append((d, match))
        else:
            problems.append(f"{d}: no reference in {ref} (tried {d.name} and {reference_name(d.name)}.*, in any "
                            f"case); name it like its reference or give {arg('ref')}FILE")
    return sorted(pairs), problems
