"""Reference-disjoint splits: the train/val/test pairs of a :class:`DataConfig` (saved as ``split.json``) and the
``--check_data`` report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ahiq.data.datasets import DataConfig, load_dataset
from ahiq.data.records import SPLITS, Pair, result_names
from ahiq.data.screening import check_pairs_on_disk, describe, unique_messages
from ahiq.utils.errors import UserError, arg, named, note, plain
from ahiq.utils.inputs import reading
from ahiq.utils.io import atomic_write_text


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


def split_references(ref_ids: list[str], ratio: tuple[float, float, float], seed: int,
                     by: str = "reference", ratio_text: str | None = None) -> dict[str, list[str]]:
    """Whole references (``by="pair"``: pairs' names) assigned to train/val/test at ``ratio`` after a seeded shuffle."""
    ids = sorted(set(ref_ids))
    order = [ids[i] for i in np.random.RandomState(seed).permutation(len(ids))]
    n = len(ids)
    n_val = max(1, round(n * ratio[1])) if ratio[1] > 0 else 0
    n_test = max(1, round(n * ratio[2])) if ratio[2] > 0 else 0
    if n - n_val - n_test < 1:
        shown = ratio_text or ":".join(f"{r:g}" for r in ratio[:3 if ratio[2] else 2])
        larger = f"give {arg('split_ratio')}a larger first (train) part"
        way = (f"or split pairs instead of references with {arg('split_by')}pair (a pipeline check: the parts then "
               f"share references){f', or {larger}' if n >= 3 else ''}" if by == "reference" else f"or {larger}")
        raise UserError(f"{n} {by}(s) cannot be split {shown} (one at least per part): to score the whole set "
                        f"without training use {arg('split')}all (test.py), {way}")
    return {"train": sorted(order[n_val + n_test:]), "val": sorted(order[:n_val]),
            "test": sorted(order[n_val:n_val + n_test])}


def split_keys(pairs: list[Pair], by: str = "reference") -> list[str]:
    """What a split assigns to its parts, per pair: its reference id, or (``by="pair"``) its result name."""
    return result_names(pairs) if by == "pair" else [p.ref_id for p in pairs]


def write_split(path: Path, split: dict[str, list[str]], info: dict) -> None:
    atomic_write_text(path, json.dumps({**info, "splits": split}, indent=1) + "\n")


def read_split_file(path: str | Path) -> tuple[dict[str, list[str]], str]:
    """The parts of a ``split.json`` and what they hold (``reference`` ids, or ``pair`` names)."""
    try:
        reading(path)
        data = json.loads(Path(path).read_text())
        return {k: list(data["splits"].get(k, [])) for k in SPLITS}, str(data.get("by", "reference"))
    except FileNotFoundError:
        raise UserError(f"{arg('split_file')}{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, AttributeError, TypeError):
        raise UserError(f"{arg('split_file')}{path}: not a split file written by train.py (split.json)") from None


def apply_split(pairs: list[Pair], split: dict[str, list[str]], keys: list[str] | None = None) -> dict[str, list[Pair]]:
    """Pairs of each part by reference id (or by ``keys``, one per pair); pairs in no part are left out."""
    part_of = {ref: part for part, refs in split.items() for ref in refs}
    out: dict[str, list[Pair]] = {part: [] for part in SPLITS}
    for pair, key in zip(pairs, split_keys(pairs) if keys is None else keys):
        if key in part_of:
            out[part_of[key]].append(pair)
    return out


def prepare_splits(cfg: DataConfig, run_dir: Path | None,
                   saved_split: Path | None = None) -> tuple[dict[str, list[Pair]], dict]:
    """Train/val/test pairs of ``cfg`` and what decided them (the labels' split column, a split file, or a seeded split),
    saved as ``run_dir/split.json``."""
    pairs = load_dataset(cfg)
    if pairs[0].split is not None:
        if cfg.split_file or cfg.split_ratio:
            note(f"note: {named('split_file')}/{named('split_ratio')} not used: the labels' split column decides")
        parts = {name: [p for p in pairs if p.split == name] for name in SPLITS}
        split = {name: sorted({p.ref_id for p in part}) for name, part in parts.items()}
        shared = set(split["train"]) & (set(split["val"]) | set(split["test"]))
        if shared:
            note(f"note: {len(shared)} reference(s) appear in training and in val/test (e.g. {sorted(shared)[0]}): "
                 "the split column is not reference-disjoint")
        info = {"dataset": cfg.dataset, "from": "split column"}
    else:
        split_file = cfg.split_file or (str(saved_split) if saved_split else None)
        if split_file:
            split, by = read_split_file(split_file)
            keys = split_keys(pairs, by)
            info = {"dataset": cfg.dataset, "from": str(split_file)}
        else:
            by = cfg.split_by
            ratio = "1:0" if cfg.val_list and not cfg.split_ratio else cfg.ratio  # a validation list replaces it
            keys = split_keys(pairs, by)
            split = split_references(keys, parse_ratio(ratio), cfg.split_seed, by, ratio)
            info = {"dataset": cfg.dataset, "ratio": ratio, "seed": cfg.split_seed}
            if by == "pair":
                note(f"note: {arg('split_by')}pair: the parts share references (a pipeline check, not the "
                     "reference-disjoint protocol)")
        if by != "reference":
            info["by"] = by
        parts = apply_split(pairs, split, keys)
        if cfg.val_list:
            from ahiq.data.pipal import load_folder_pairs

            parts["val"] = load_folder_pairs(Path(cfg.val_ref_dir), Path(cfg.val_dis_dir), Path(cfg.val_list))
            info["val_list"] = str(cfg.val_list)
    if run_dir is not None:
        write_split(run_dir / "split.json", split, info)
    return parts, info


def data_check(parts: dict[str, list[Pair]], crop: int) -> tuple[list[str], bool]:
    """The report of ``--check_data`` (every image decoded in full): one ``data check:`` line per split, then its
    problems; and whether there were any."""
    found = {}
    for name in SPLITS:
        pairs = parts.get(name) or []
        if not pairs and name == "test":
            continue
        found[name] = (pairs, unique_messages(check_pairs_on_disk(pairs, crop)[0], crop))
    lines = [f"data check: {name} {describe(pairs)}; {len(problems)} problems"
             for name, (pairs, problems) in found.items()]
    lines += [plain(f"  {name}: {line}") for name, (_, problems) in found.items() for line in problems]
    return lines, any(problems for _, problems in found.values())
