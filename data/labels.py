"""Shared reading of label files: text lines, numbers, repeated names, images by case-insensitive name.

Every loader (PIPAL, the standard sets, folder pairs) reports problems the same way: ``file:line: what is
wrong; what to do``.
"""
from __future__ import annotations

import math
from pathlib import Path

from data.images import is_image
from utils.errors import UserError


def need_file(path: Path, what: str) -> None:
    """A :class:`UserError` naming the dataset folder to give when ``path`` (a label file) is missing."""
    if not path.is_file():
        raise UserError(f"{path}: {what} not found; give the folder of the dataset as distributed "
                        f"(the one that holds {path.name})")


def label_lines(path: Path) -> list[str]:
    """The lines of a text label file, without line ends (CRLF or LF) or a UTF-8 byte-order mark."""
    need_file(path, "label file")
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file; give the label file as distributed") from None


def parse_number(text: object, where: str, column: str) -> float:
    """``text`` as a finite float, or a :class:`UserError` at ``where`` (``file:line``)."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise UserError(f"{where}: {column} {text!r} is not a number; correct or delete that line")
    return value


def images_by_lower_name(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` keyed by lower-case name; empty when the folder is absent."""
    if not folder.is_dir():
        return {}
    return {p.name.lower(): p for p in sorted(folder.iterdir()) if p.is_file() and is_image(p)}


def check_new(seen: dict[str, int], key: str, number: int, where: str, name: str) -> None:
    """Record ``key`` as listed at line ``number``; a second listing is a :class:`UserError`."""
    # A repeated image would be counted twice and could land on both sides of a split.
    if key in seen:
        raise UserError(f"{where}: {name} is listed again (first at line {seen[key]}); delete one of the lines")
    seen[key] = number
