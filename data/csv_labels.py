"""Your own labelled pairs: ``DIR/labels.csv`` with columns ``dist``, ``ref``, ``score`` (paths relative to ``DIR``)
and optionally ``split`` (train/val/test) and ``type`` (distortion type)."""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from ahiq.data.labels import check_new, csv_rows, parse_number
from ahiq.data.records import SPLITS, Pair
from ahiq.utils.errors import UserError


def listed_path(text: str) -> str:
    return str(PurePosixPath(text.replace("\\", "/")))


def file_id(path: Path, base: Path) -> str:
    """What tells files apart: the resolved path, relative to ``base`` when inside it, else absolute."""
    path = path.resolve()
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else path.as_posix()


def load_csv_dataset(root: Path, lower_better: bool = False) -> list[Pair]:
    """The pairs of ``root/labels.csv`` in file order; ``lower_better``: scores negated, ``raw`` as written."""
    path, base = root / "labels.csv", root.resolve()
    pairs, seen = [], {}
    for number, row in csv_rows(path, ("dist", "ref", "score")):
        where = f"{path}:{number}"
        if not row["dist"] or not row["ref"]:
            raise UserError(f"{where}: empty {'dist' if not row['dist'] else 'ref'} path; correct or delete the line")
        raw = parse_number(row["score"], where, "score")
        split = row["split"].lower() if "split" in row else None
        if split is not None and split not in SPLITS:
            raise UserError(f"{where}: split {row['split']!r} is not train, val or test; correct it (or drop the "
                            "split column for a random reference-disjoint split)")
        dist, ref = listed_path(row["dist"]), listed_path(row["ref"])
        dist_id, ref_id = file_id(base / dist, base), file_id(base / ref, base)
        if dist_id == ref_id:
            raise UserError(f"{where}: dist and ref are the same image {dist}; delete the line")
        check_new(seen, dist_id, number, where, dist)
        pairs.append(Pair(Path(os.path.normpath(base / dist)), Path(os.path.normpath(base / ref)),
                          -raw if lower_better else raw, raw, listed=dist, listed_ref=ref_id, split=split,
                          type=row.get("type") or None))
    if not pairs:
        raise UserError(f"{path}: no pairs listed under the header")
    return pairs
