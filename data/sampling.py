"""Training samples: score normalisation, an epoch's random crop pairs and their order, functions of the seed, the
epoch and the index alone (so resumed runs are identical)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from ahiq.data.images import MAX_PIXELS, common_depth, read_image
from ahiq.data.records import Pair
from ahiq.data.crops import CROP_RULES, FLIPS
from ahiq.utils.errors import UserError, arg


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


class CropPairs(Dataset):
    """Key ``epoch * len(self) + i`` -> ``(dist (3, c, c), ref (3, c, c), target, i)``: one random crop window shared by
    the pair and a random flip, drawn from ``(seed, epoch, i)``. ``crop_rule`` ``authors`` replays the release's
    ``randint(0, H - c)``, which never reaches the last row and column."""

    def __init__(self, pairs: list[Pair], targets, crop: int, flip: str = "horizontal", seed: int = 0,
                 crop_rule: str = "full", max_pixels: int | None = MAX_PIXELS):
        if flip not in FLIPS:
            raise UserError(f"{arg('flip')}{flip}: use horizontal, vertical (the authors' accident) or none")
        if crop_rule not in CROP_RULES:
            raise UserError(f"{arg('train_crop_rule')}{crop_rule}: use {' or '.join(CROP_RULES)}")
        self.pairs, self.targets = pairs, np.asarray(targets, dtype=np.float32)
        self.crop, self.flip, self.seed, self.crop_rule, self.max_pixels = crop, flip, seed, crop_rule, max_pixels

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: int):
        epoch, i = divmod(int(key), len(self.pairs))
        pair = self.pairs[i]
        dist, ref = common_depth((read_image(pair.dist, self.max_pixels), read_image(pair.ref, self.max_pixels)))
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
    """Shuffled indices of one epoch (this rank's shard under DDP), tagged ``epoch * n + i``, from ``(seed, epoch)``."""

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
