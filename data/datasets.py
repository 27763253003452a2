"""From options to training/validation/test pairs: dataset choice, reference-disjoint splits, score
normalisation, the training crop dataset and the data check.
"""
from __future__ import annotations

import json
import math
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from data.images import common_depth, read_header, read_image
from data.records import Pair
from utils.errors import UserError, arg, flag
from utils.io import atomic_write_text

DATASETS = ("pipal", "synthetic", "tid2013", "kadid10k", "csiq", "live", "csv")
# PIPAL's validation labels are not public, so by default a tenth of its training references validates.
DEFAULT_RATIO = {"pipal": "9:1", "synthetic": "3:1"}
STANDARD_RATIO = "6:2:2"
SPLITS = ("train", "val", "test")


# What each dataset's score (higher = better, as training and metrics use it) is, with its scale: axis labels.
LABEL_NAMES = {
    "pipal": "MOS (PIPAL, Elo-based, about 900-1850)",
    "synthetic": "pseudo-MOS (synthetic, 900-1850)",
    "tid2013": "MOS (TID2013, 0-9)",
    "kadid10k": "dmos (KADID-10k, 1-5 ACR, higher = better)",
    "csiq": "1 - DMOS (CSIQ, DMOS 0-1)",
    "live": "100 - DMOS (LIVE, DMOS 0-100)",
}


def default_data_root(name: str) -> str:
    """Where a dataset lives when no folder is given: ``./datasets/PIPAL``, ``./datasets/synthetic``, ... (its own
    folder each, so the generated set is never written into a real dataset's)."""
    return f"./datasets/{'PIPAL' if name == 'pipal' else name}"


def load_dataset(name: str, root: str | Path, *, train_list: str | None = None, synthetic_refs: int = 12,
                 synthetic_size: int = 128, seed: int = 0, lower_better: bool = False) -> list[Pair]:
    """All labelled pairs of a dataset in its distributed layout (synthetic: generated on first use; csv:
    ``root/labels.csv``, see :mod:`data.csv_labels`)."""
    root = Path(root)
    if name == "csv":
        from data.csv_labels import load_csv_dataset

        return load_csv_dataset(root, lower_better)
    if name == "pipal":
        from data.pipal import load_pipal_train

        return load_pipal_train(root, Path(train_list) if train_list else None)
    if name == "synthetic":
        from data.pipal import load_pipal_train
        from data.synthetic import ensure_synthetic

        ensure_synthetic(root, n_refs=synthetic_refs, size=synthetic_size, seed=seed)
        return load_pipal_train(root)
    from data.standard import LOADERS

    if name not in LOADERS:
        raise UserError(f"{arg('dataset')}{name}: choose one of {', '.join(DATASETS)}")
    if not root.is_dir():
        raise UserError(f"{arg('data_root')}{root}: folder not found")
    return LOADERS[name](root)


def parse_ratio(text: str) -> tuple[float, float, float]:
    """``'6:2:2'`` -> (0.6, 0.2, 0.2); ``'8:2'`` -> (0.8, 0.2, 0.0) (no test split)."""
    try:
        parts = [float(v) for v in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) not in (2, 3) or any(p < 0 for p in parts) or parts[0] <= 0:
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
        data = json.loads(Path(path).read_text())
        return {k: list(data["splits"].get(k, [])) for k in SPLITS}
    except FileNotFoundError:
        raise UserError(f"{arg('split_file')}{path}: file not found") from None
    except (json.JSONDecodeError, KeyError, AttributeError):
        raise UserError(f"{arg('split_file')}{path}: not a split file written by train.py (split.json)") from None


def apply_split(pairs: list[Pair], split: dict[str, list[str]]) -> dict[str, list[Pair]]:
    """Pairs of each part by reference id; references in no part are left out."""
    part_of = {ref: part for part, refs in split.items() for ref in refs}
    out: dict[str, list[Pair]] = {part: [] for part in SPLITS}
    for pair in pairs:
        if pair.ref_id in part_of:
            out[part_of[pair.ref_id]].append(pair)
    return out


@dataclass
class ScoreNorm:
    """Maps label scores to training targets: ``minmax`` to [0, 1] with fitted ``lo``/``hi``, or ``none``."""

    kind: str = "minmax"
    lo: float = 0.0
    hi: float = 1.0

    @classmethod
    def fit(cls, scores, kind: str = "minmax") -> "ScoreNorm":
        scores = np.asarray(list(scores), dtype=np.float64)
        if kind == "none" or len(scores) == 0:
            return cls("none")
        lo, hi = float(scores.min()), float(scores.max())
        if hi <= lo:
            raise UserError("all training scores are equal; score normalisation needs a spread")
        return cls("minmax", lo, hi)

    def __call__(self, scores):
        scores = np.asarray(scores, dtype=np.float64)
        return scores if self.kind == "none" else (scores - self.lo) / (self.hi - self.lo)

    def inverse(self, values):
        values = np.asarray(values, dtype=np.float64)
        return values if self.kind == "none" else values * (self.hi - self.lo) + self.lo

    def to_dict(self) -> dict:
        return {"kind": self.kind, "lo": self.lo, "hi": self.hi}

    @classmethod
    def from_dict(cls, data: dict | None) -> "ScoreNorm":
        return cls(**data) if data else cls("none")


CROP_RULES = ("full", "authors")


class CropPairs(Dataset):
    """Training samples: one random crop window shared by distorted and reference, and a random flip.

    Key ``epoch * len(self) + i`` (see :class:`EpochSampler`) -> ``(dist (3, c, c) uint8, ref (3, c, c)
    uint8, target float32, i)``. The window and flip come from a generator seeded by ``(seed, epoch, i)``,
    so they depend on neither worker count nor order (what makes resumed runs identical) and persistent
    workers need no per-epoch update. ``crop_rule``: ``full`` draws every window position ``0..H-c`` x
    ``0..W-c``; ``authors`` replays the release's ``randint(0, H - c)``, whose exclusive end never reaches
    the last row and column (where that leaves no position, ``H == c``, their code failed; here it takes 0).
    ``flip``: ``horizontal`` (left-right), ``vertical`` (the authors' accidental up-down flip) or ``none``.
    """

    def __init__(self, pairs: list[Pair], targets, crop: int, flip: str = "horizontal", seed: int = 0,
                 crop_rule: str = "full"):
        if flip not in ("horizontal", "vertical", "none"):
            raise UserError(f"{arg('flip')}{flip}: use horizontal, vertical (the authors' accident) or none")
        if crop_rule not in CROP_RULES:
            raise UserError(f"{arg('train_crop_rule')}{crop_rule}: use {' or '.join(CROP_RULES)}")
        self.pairs = pairs
        self.targets = np.asarray(targets, dtype=np.float32)
        self.crop = crop
        self.flip = flip
        self.seed = seed
        self.crop_rule = crop_rule

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: int):
        epoch, i = divmod(int(key), len(self.pairs))
        pair = self.pairs[i]
        dist, ref = common_depth((read_image(pair.dist), read_image(pair.ref)))
        if dist.shape != ref.shape:
            raise UserError(f"{pair.dist}: size differs from its reference {pair.ref}")
        h, w, _ = dist.shape
        rng = np.random.default_rng([self.seed, epoch, i])
        last = 0 if self.crop_rule == "full" else 1  # the authors' end is exclusive: h - crop is never drawn
        top = int(rng.integers(0, max(h - self.crop + 1 - last, 1)))
        left = int(rng.integers(0, max(w - self.crop + 1 - last, 1)))
        flip = rng.random() < 0.5 and self.flip != "none"
        axis = 1 if self.flip == "horizontal" else 0  # (H, W, C): axis 1 is left-right
        out = []
        for img in (dist, ref):
            img = img[top:top + self.crop, left:left + self.crop]
            if flip:
                img = np.flip(img, axis=axis)
            out.append(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))))
        return out[0], out[1], torch.tensor(self.targets[i]), i

    @staticmethod
    def collate(batch: list) -> tuple:
        """Stack samples like the default collate; when 8-bit and 16-bit images meet, all become float in [0, 1]."""
        columns = list(zip(*batch))
        columns[0], columns[1] = common_depth(columns[0]), common_depth(columns[1])
        return (torch.stack(columns[0]), torch.stack(columns[1]), torch.stack(columns[2]),
                torch.tensor(columns[3]))


class EpochSampler(torch.utils.data.Sampler):
    """Shuffled indices of one epoch (of this rank's shard under DDP), tagged ``epoch * n + i``.

    The order is a function of ``(seed, epoch)`` only: a resumed run sees the same order, and the
    epoch travels inside the index, so a DataLoader with persistent workers is built once.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.rank, self.world = n, seed, rank, world_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Choose the epoch; ``skip`` leaves out its first indices (those a stopped run already trained on)."""
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return math.ceil(self.n / self.world)

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 7919 + self.epoch)).tolist()
        order += order[: len(self) * self.world - self.n]  # pad so every rank takes the same number of steps
        return iter([self.epoch * self.n + i for i in order[self.rank::self.world][self.skip:]])


def check_pairs_on_disk(pairs: list[Pair], crop: int, decode: bool, workers: int = 8,
                        alpha: list[Path] | None = None) -> list[tuple[int, str]]:
    """Problems of the pairs' images as ``(pair index, 'file: reason')``: missing, undecodable, reference/distorted
    size mismatch, smaller than ``crop``. Sizes are those :func:`read_image` returns (EXIF orientation applied).

    With ``decode`` every distinct file is decoded in full, once, in ``workers`` threads, by :func:`read_image`
    (what scoring and training use; JPEGs by PIL too, which finds the truncated body that OpenCV lets pass), so
    what passes can be read later. Without it only headers are read.
    Files with an alpha channel are appended to ``alpha`` when given.
    """
    def inspect(path: Path) -> tuple[int, int, bool] | str:
        try:
            header = read_header(path, decode=decode)
            if decode:
                shape = read_image(path).shape
                if shape[:2] != (header.height, header.width):
                    return (f"{path}: decodes to {shape[1]}x{shape[0]}, its header says {header.width}x"
                            f"{header.height}; re-save the image")
            return header.height, header.width, header.alpha
        except UserError as err:
            return str(err)

    paths = list(dict.fromkeys(p for pair in pairs for p in (pair.dist, pair.ref) if p.is_file()))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        info = dict(zip(paths, pool.map(inspect, paths)))
    if alpha is not None:
        alpha += [p for p, v in info.items() if not isinstance(v, str) and v[2]]
    folders: dict[Path, bool] = {}

    def one(pair: Pair) -> str | None:
        for folder in (pair.ref.parent, pair.dist.parent):  # a missing folder is one problem, not one per pair
            if not folders.setdefault(folder, folder.is_dir() or "*" in folder.name):  # PIPAL's Distortion_*
                return f"{folder}{os.sep} not found (image folder)"
        if not pair.ref.is_file():
            return (f"{pair.dist}: its reference {pair.ref.name} is not in {pair.ref.parent}; add it, or remove "
                    "or rename the distorted image")
        sizes = []
        for path in (pair.dist, pair.ref):
            found = info.get(path, f"{path}: image not found")
            if isinstance(found, str):
                return found
            sizes.append(found[:2])
        if sizes[0] != sizes[1]:
            return (f"{pair.dist}: size {sizes[0][1]}x{sizes[0][0]} differs from its reference {pair.ref} "
                    f"({sizes[1][1]}x{sizes[1][0]})")
        if min(sizes[0]) < crop:
            return f"{pair.dist}: {sizes[0][1]}x{sizes[0][0]} is smaller than the {crop}x{crop} crop"
        return None

    results = [one(pair) for pair in pairs]
    return [(i, msg) for i, msg in enumerate(results) if msg is not None]


def unique_messages(problems: list[tuple[int, str]]) -> list[str]:
    """Problem lines without repeats, in order; a problem shared by several pairs (a missing folder) says how
    many: ``.../images/ not found (image folder): 10,125 pairs affected``."""
    counts = Counter(msg for _, msg in problems)
    return [msg if n == 1 else f"{msg}: {n:,} pairs affected" for msg, n in counts.items()]


def screen_pairs(pairs: list[Pair], crop: int, skip_bad: bool, known: list[str] | None = None,
                 part: str = "", report: Callable[[str], None] | None = None,
                 warned: set[str] | None = None) -> list[Pair]:
    """The pairs that can be used: the one screening path of scoring and training.

    Every image is decoded in full (see :func:`check_pairs_on_disk`), so what passes, scoring can read.
    Problems (``known`` ones, e.g. from pairing, plus those found on disk) stop everything with one
    :class:`UserError` listing them, or with ``skip_bad`` are reported as skipped (``report``, default stderr)
    and left out. ``part`` names the split in messages (``train``, ``val``). Images with an alpha channel get
    one warning; ``warned`` (shared by the calls of one run) keeps it to one per run.
    """
    alpha: list[Path] = []
    found = check_pairs_on_disk(pairs, crop, decode=True, alpha=alpha)
    problems = list(known or []) + unique_messages(found)
    where = f" in the {part} data" if part else ""
    report = report or (lambda line: print(line, file=sys.stderr))
    if problems and not skip_bad:
        shown = problems[:20] + (["..."] if len(problems) > 20 else [])
        raise UserError(f"{len(problems)} problem(s){where}, nothing done:\n  " + "\n  ".join(shown)
                        + f"\n(fix them, list them all with {flag('check_data')}, "
                        f"or add {flag('skip_bad')} to use the rest)")
    warned = set() if warned is None else warned
    if alpha and "alpha" not in warned:
        warned.add("alpha")
        report(f"warning: {len(alpha)} image(s) have an alpha channel (first: {alpha[0]}); AHIQ scores their "
               "RGB values and ignores alpha")
    for line in problems:
        report(f"skipped{f' ({part})' if part else ''}: {line}")
    bad = {i for i, _ in found}
    kept = [p for i, p in enumerate(pairs) if i not in bad]
    if not kept:
        raise UserError(f"no usable image pairs{where}")
    return kept


def describe(pairs: list[Pair]) -> str:
    return f"{len(pairs)} pairs from {len(Counter(p.ref_id for p in pairs))} references"
