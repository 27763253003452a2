"""Reference-disjoint splits: the train/val/test pairs of a :class:`DataConfig` (saved as ``split.json``), an
optional separate validation list, and the ``--check_data`` report."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ahiq.data.datasets import DataConfig, load_dataset
from ahiq.data.records import Pair
from ahiq.data.screening import check_pairs_on_disk, describe, unique_messages
from ahiq.utils.errors import UserError, arg, say
from ahiq.utils.inputs import reading
from ahiq.utils.io import atomic_write_text

SPLITS = ("train", "val", "test")


def parse_ratio(text: str) -> tuple[float, float, float]:
    """``'6:2:2'`` -> (0.6, 0.2, 0.2); ``'8:2'`` -> (0.8, 0.2, 0.0) (no test split)."""
    try:
        parts = [float(v) for v in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) not in (2, 3) or not all(0 <= p < float("inf") for p in parts) or parts[0] <= 0:
        raise UserError(f"{arg('split_ratio')}{text}: use train:val or train:val:test, e.g. 9:1 or 6:2:2")
    parts += [0.0] * (3 - len(parts))
    total = sum(parts)
    return tuple(p / total for p in parts)  # type: ignore[return-value]


def split_references(ref_ids: list[str], ratio: tuple[float, float, float], seed: int) -> dict[str, list[str]]:
    """Assign whole references to train/val/test at ``ratio`` after a seeded shuffle (reference-disjoint)."""
    ids = sorted(set(ref_ids))
    order = [ids[i] for i in np.random.RandomState(seed).permutation(len(ids))]
    n = len(ids)
    n_val = max(1, round(n * ratio[1])) if ratio[1] > 0 else 0
    n_test = max(1, round(n * ratio[2])) if ratio[2] > 0 else 0
    if n - n_val - n_test < 1:
        raise UserError(f"{n} reference(s) cannot be split {ratio}: need at least one per part")
    return {"train": sorted(order[n_val + n_test:]), "val": sorted(order[:n_val]),
            "test": sorted(order[n_val:n_val + n_test])}


def write_split(path: Path, split: dict[str, list[str]], info: dict) -> None:
    atomic_write_text(path, json.dumps({**info, "splits": split}, indent=1) + "\n")


def read_split(path: str | Path) -> dict[str, list[str]]:
    try:
        reading(path)
        data = json.loads(Path(path).read_text())
        return {k: list(data["splits"].get(k, [])) for k in SPLITS}
    except FileNotFoundError:
        raise UserError(f"{arg('split_file')}{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, AttributeError, TypeError):
        raise UserError(f"{arg('split_file')}{path}: not a split file written by train.py (split.json)") from None


def apply_split(pairs: list[Pair], split: dict[str, list[str]]) -> dict[str, list[Pair]]:
    """Pairs of each part by reference id; references in no part are left out."""
    part_of = {ref: part for part, refs in split.items() for ref in refs}
    out: dict[str, list[Pair]] = {part: [] for part in SPLITS}
    for pair in pairs:
        if pair.ref_id in part_of:
            out[part_of[pair.ref_id]].append(pair)
    return out


def prepare_splits(cfg: DataConfig, run_dir: Path | None,
                   saved_split: Path | None = None) -> tuple[dict[str, list[Pair]], dict]:
    """Train/val/test pairs of ``cfg``; the split is saved as ``run_dir/split.json`` (when given).

    The split: the label file's own ``split`` column when it has one (csv), else ``cfg.split_file`` (or
    ``saved_split``, an earlier run's), else a seeded reference-disjoint split at ``cfg.ratio``.
    """
    pairs = load_dataset(cfg)
    if pairs[0].split is not None:
        if cfg.split_file or cfg.split_ratio:
            say(f"note: {arg('split_file')}/{arg('split_ratio')}not used: the labels' split column decides")
        parts = {name: [p for p in pairs if p.split == name] for name in SPLITS}
        split = {name: sorted({p.ref_id for p in part}) for name, part in parts.items()}
        shared = set(split["train"]) & (set(split["val"]) | set(split["test"]))
        if shared:
            print(f"note: {len(shared)} reference(s) appear in training and in val/test (e.g. {sorted(shared)[0]}): "
                  "the split column is not reference-disjoint", file=sys.stderr)
        info = {"dataset": cfg.dataset, "from": "split column"}
    else:
        split_file = cfg.split_file or (str(saved_split) if saved_split else None)
        if split_file:
            split, info = read_split(split_file), {"dataset": cfg.dataset, "from": str(split_file)}
        else:
            ratio = "1:0" if cfg.val_list and not cfg.split_ratio else cfg.ratio  # a validation list replaces it
            split = split_references([p.ref_id for p in pairs], parse_ratio(ratio), cfg.split_seed)
            info = {"dataset": cfg.dataset, "ratio": ratio, "seed": cfg.split_seed}
        parts = apply_split(pairs, split)
        if cfg.val_list:
            from ahiq.data.pipal import load_folder_pairs

            parts["val"] = load_folder_pairs(Path(cfg.val_ref_dir), Path(cfg.val_dis_dir), Path(cfg.val_list))
            info["val_list"] = str(cfg.val_list)
    if run_dir is not None:
        write_split(run_dir / "split.json", split, info)
    return parts, info


def run_data_check(parts: dict[str, list[Pair]], crop: int) -> dict[str, list[tuple[int, str]]]:
    """Print one ``data check:`` line per split, then its problems (every image decoded in full); return them."""
    found = {}
    for name in SPLITS:
        pairs = parts.get(name) or []
        if not pairs and name == "test":
            continue
        found[name] = problems = check_pairs_on_disk(pairs, crop, decode=True)
        print(f"data check: {name} {describe(pairs)}; {len(unique_messages(problems, crop))} problems")
    for name, problems in found.items():
        for line in unique_messages(problems, crop):
            say(f"  {name}: {line}", file=sys.stdout)
    return found
