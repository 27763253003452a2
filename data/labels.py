"""Reading label files (lines, CSV rows, numbers, repeated names), problems as ``file:line: what is wrong; what to do``."""
from __future__ import annotations

import csv
import math
import re
from pathlib import Path

from ahiq.data.images import by_name_key, is_image
from ahiq.utils.errors import UserError
from ahiq.utils.io import existing_file


def need_file(path: Path, what: str) -> None:
    """A :class:`UserError` naming the dataset folder to give when ``path`` (a label file) is missing."""
    existing_file(path, what, f"give the folder of the dataset as distributed (the one that holds {path.name})")


def label_lines(path: Path) -> list[str]:
    """The lines of a text label file, split at CR, LF or CRLF only (a file name may hold U+2028)."""
    need_file(path, "label file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file; give the label file as distributed") from None
    lines = re.split(r"\r\n|\r|\n", text)
    return lines[:-1] if lines and lines[-1] == "" else lines


def csv_rows(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """``(line number, {column: text})`` per row of a CSV label file after its header; blank rows skipped."""
    need_file(path, "label file")
    header: list[str] | None = None
    rows = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            for fields in reader:
                where = f"{path}:{reader.line_num}"
                fields = [f.strip() for f in fields]
                if not any(fields):
                    continue
                if header is None:
                    header = _header(fields, required, where)
                elif len(fields) != len(header):
                    raise UserError(f"{where}: {len(fields)} fields for the header's {len(header)}; correct or "
                                    "delete the line")
                else:
                    rows.append((reader.line_num, dict(zip(header, fields))))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file; give the label file as distributed") from None
    except csv.Error as err:
        raise UserError(f"{path}: not readable as CSV ({err}); correct the file") from None
    if header is None:
        raise UserError(f"{path}: empty; the first line is a header with at least {', '.join(required)}")
    return rows


def _header(fields: list[str], required: tuple[str, ...], where: str) -> list[str]:
    header = [f.lower() for f in fields]
    repeated = sorted({c for c in header if c and header.count(c) > 1})
    if repeated:  # a DictReader would keep the last one silently
        raise UserError(f"{where}: the header names {', '.join(repeated)} more than once; keep one column of each name")
    missing = [c for c in required if c not in header]
    if missing:
        raise UserError(f"{where}: the header lacks {', '.join(missing)} (found {', '.join(header)}); the first line "
                        f"must name the columns, at least {', '.join(required)}")
    return header


def parse_number(text: object, where: str, column: str) -> float:
    """``text`` as a finite float, or a :class:`UserError` at ``where`` (``file:line``)."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise UserError(f"{where}: {column} {text!r} is not a number; correct or delete that line")
    return value


def images_by_key(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` by :func:`data.images.name_key` (none when the folder is absent)."""
    if not folder.is_dir():
        return {}
    return by_name_key((p for p in sorted(folder.iterdir()) if p.is_file() and is_image(p)), folder)


def check_new(seen: dict[str, int], key: str, number: int, where: str, name: str) -> None:
    """Record ``key`` as listed at line ``number``; a second listing is a :class:`UserError`."""
    if key in seen:
        raise UserError(f"{where}: {name} is listed again (first at line {seen[key]}); delete one of the lines")
    seen[key] = number
