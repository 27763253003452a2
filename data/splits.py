"""From options to the pairs of each split: dataset, reference-disjoint split (saved as ``split.json``),
an optional separate validation list, and the ``--check_data`` report."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data.datasets import (DEFAULT_RATIO, SPLITS, STANDARD_RATIO, apply_split, check_pairs_on_disk, describe,
                           load_dataset, parse_ratio, read_split, split_references, unique_messages, write_split)
from data.pipal import load_folder_pairs
from data.records import Pair
from utils.errors import UserError, arg


def load_pairs(opt: argparse.Namespace) -> list[Pair]:
    """Every labelled pair of the dataset the options name."""
    return load_dataset(opt.dataset, opt.data_root, train_list=opt.train_list, synthetic_refs=opt.synthetic_refs,
                        synthetic_size=opt.synthetic_size, seed=opt.split_seed,
                        lower_better=getattr(opt, "lower_better", False))


def prepare_splits(opt: argparse.Namespace, run_dir: Path | None,
                   saved_split: Path | None = None) -> tuple[dict[str, list[Pair]], dict]:
    """Train/val/test pairs from the options, the split saved as ``run_dir/split.json`` (when given).

    The split: the label file's own ``split`` column when it has one (csv), else ``split_file`` (or
    ``saved_split``, an earlier run's), else a seeded reference-disjoint split at ``split_ratio``.
    """
    pairs = load_pairs(opt)
    if not pairs:
        raise UserError(f"{arg('data_root')}{opt.data_root}: no labelled pairs found")
    if pairs[0].split is not None:
        if opt.split_file or opt.split_ratio:
            print(f"note: {arg('split_file')}/{arg('split_ratio')}not used: the labels' split column decides",
                  file=sys.stderr)
        parts = {name: [p for p in pairs if p.split == name] for name in SPLITS}
        split = {name: sorted({p.ref_id for p in part}) for name, part in parts.items()}
        shared = set(split["train"]) & (set(split["val"]) | set(split["test"]))
        if shared:
            print(f"note: {len(shared)} reference(s) appear in training and in val/test (e.g. {sorted(shared)[0]}): "
                  "the split column is not reference-disjoint", file=sys.stderr)
        info = {"dataset": opt.dataset, "from": "split column"}
        if run_dir is not None:
            write_split(run_dir / "split.json", split, info)
        return parts, info
    split_file = opt.split_file or (str(saved_split) if saved_split else None)
    if split_file:
        split = read_split(split_file)
        info = {"dataset": opt.dataset, "from": str(split_file)}
    else:
        ratio_text = opt.split_ratio or DEFAULT_RATIO.get(opt.dataset, STANDARD_RATIO)
        if opt.val_list and not opt.split_ratio:
            ratio_text = "1:0"  # a given validation list replaces the held-out part
        ratio = parse_ratio(ratio_text)
        split = split_references([p.ref_id for p in pairs], ratio, opt.split_seed)
        info = {"dataset": opt.dataset, "ratio": ratio_text, "seed": opt.split_seed}
    parts = apply_split(pairs, split)
    if opt.val_list:
        parts["val"] = load_folder_pairs(Path(opt.val_ref_dir), Path(opt.val_dis_dir), Path(opt.val_list))
        info["val_list"] = str(opt.val_list)
    if run_dir is not None:
        write_split(run_dir / "split.json", split, info)
    return parts, info


def run_data_check(parts: dict[str, list[Pair]], crop: int, decode: bool) -> dict[str, list[tuple[int, str]]]:
    """Print one ``data check:`` line per split, then its problems; return the problems per split."""
    found = {}
    for name in SPLITS:
        pairs = parts.get(name) or []
        if not pairs and name == "test":
            continue
        problems = check_pairs_on_disk(pairs, crop, decode)
        found[name] = problems
        print(f"data check: {name} {describe(pairs)}; {len(unique_messages(problems))} problems")
    for name, problems in found.items():
        for line in unique_messages(problems):
            print(f"  {name}: {line}")
    return found
