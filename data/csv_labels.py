"""Your own labelled pairs: ``DIR/labels.csv`` with a header naming at least ``dist``, ``ref`` and ``score``.

Paths are relative to ``DIR`` (sub-folders allowed) and name the pairs in results and quality maps as written.
An optional ``split`` column (``train``/``val``/``test``) replaces the random reference-disjoint split; an optional
``type`` column names each pair's distortion type (per-type tables, :mod:`data.distortions`); other columns are
ignored. ``lower_better`` marks DMOS-like scores: training and metrics use ``-score`` (higher =
better) and ``Pair.raw`` keeps the value as written.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path, PurePosixPath

from data.labels import check_new, label_lines, parse_number
from data.records import Pair
from utils.errors import UserError

LABELS_CSV = "labels.csv"
REQUIRED = ("dist", "ref", "score")
SPLIT_NAMES = ("train", "val", "test")


def listed_path(text: str) -> str:
    """A path as written in the file, with ``\\`` separators and ``./`` prefixes made uniform."""
    return str(PurePosixPath(text.strip().replace("\\", "/")))


def load_csv_dataset(root: str | Path, lower_better: bool = False) -> list[Pair]:
    """The pairs of ``root/labels.csv`` in file order (see the module docstring); bad rows are a
    :class:`UserError` naming ``file:line``."""
    root = Path(root)
    path = root / LABELS_CSV
    lines = label_lines(path)
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    if not rows:
        raise UserError(f"{path}: empty; the first line is a header with at least {', '.join(REQUIRED)}")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise UserError(f"{path}:1: the header lacks {', '.join(missing)} (found {', '.join(header) or 'nothing'}); "
                        f"the first line must name the columns, at least {', '.join(REQUIRED)}")
    column = {name: header.index(name) for name in (*REQUIRED, "split") if name in header}
    pairs: list[Pair] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows[1:], 2):
        where = f"{path}:{number}"
        if not any(field.strip() for field in row):
            continue
        if len(row) < len(header):
            raise UserError(f"{where}: {len(row)} fields for the header's {len(header)}; correct or delete the line")
        dist, ref = (row[column[c]].strip() for c in ("dist", "ref"))
        if not dist or not ref:
            raise UserError(f"{where}: empty {'dist' if not dist else 'ref'} path; correct or delete the line")
        raw = parse_number(row[column["score"]].strip(), where, "score")
        split = None
        if "split" in column:
            split = row[column["split"]].strip().lower()
            if split not in SPLIT_NAMES:
                raise UserError(f"{where}: split {row[column['split']]!r} is not train, val or test; correct it "
                                "(or drop the split column for a random reference-disjoint split)")
        dist, ref = listed_path(dist), listed_path(ref)
        if dist == ref:
            raise UserError(f"{where}: dist and ref are the same image {dist}; delete the line")
        check_new(seen, dist, number, where, dist)
        pairs.append(Pair(root / dist, root / ref, -raw if lower_better else raw, raw, listed=dist, listed_ref=ref,
                          split=split))
    if not pairs:
        raise UserError(f"{path}: no pairs listed under the header")
    return pairs
