"""Result tables, as CSV (the ``csv`` module, written atomically) or markdown."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Iterable, Sequence

from ahiq.utils.io import atomic_write_text


def csv_text(header: Sequence[str] | None, rows: Iterable[Sequence[object]]) -> str:
    """``header`` and ``rows`` as CSV text, LF line ends; a row with a CR in a field is quoted (``csv`` leaves it bare)."""
    buf = io.StringIO()
    plain = csv.writer(buf, lineterminator="\n")
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in ([header] if header is not None else []) + [list(r) for r in rows]:
        (quoted if any("\r" in str(field) for field in row) else plain).writerow(row)
    return buf.getvalue()


def write_csv(path: str | os.PathLike, header: Sequence[str] | None, rows: Iterable[Sequence[object]]) -> None:
    atomic_write_text(path, csv_text(header, rows))


def read_csv(path: str | os.PathLike) -> list[list[str]]:
    with open(Path(path), encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], title: str = "") -> str:
    """A markdown table (first column left-aligned, the others right-aligned), ``title`` above it."""
    lines = [title, ""] if title else []
    lines += ["| " + " | ".join(map(str, header)) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
