"""Score whole image pairs with a crop protocol: all crops of a batch of pairs in one forward pass."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from data.crops import crop_positions
from data.images import as_unit_float, read_image
from engine.device import precision_context
from models.ahiq import AHIQ
from utils.errors import UserError, arg


@dataclass
class PairScore:
    """The score of one pair: mean over its crops; maps ``(H, W)`` at image resolution when asked for."""

    dist: Path
    ref: Path
    score: float
    crop_scores: list[float]
    score_map: np.ndarray | None = None
    weight_map: np.ndarray | None = None


class _PairImages(Dataset):
    def __init__(self, pairs: Sequence[tuple[Path, Path]]):
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        dist, ref = self.pairs[i]
        to_chw = lambda a: torch.from_numpy(a).permute(2, 0, 1).contiguous()  # noqa: E731
        return i, to_chw(read_image(dist)), to_chw(read_image(ref))


def crop_batch(images: Sequence[torch.Tensor], positions: Sequence[Sequence[tuple[int, int]]], crop: int) -> torch.Tensor:
    """Stack the crops ``(top, left)`` of each image ``(3, H, W)`` into ``(sum of crops, 3, crop, crop)``
    (all as float in [0, 1] when 8-bit and 16-bit images meet)."""
    if len({img.dtype for img in images}) > 1:
        images = [as_unit_float(img) for img in images]
    return torch.stack([img[:, t:t + crop, x:x + crop] for img, pos in zip(images, positions) for t, x in pos])


def paste_maps(maps: torch.Tensor, positions: Sequence[tuple[int, int]], height: int, width: int,
               crop: int) -> torch.Tensor:
    """Average per-crop maps ``(N, 1, h, w)`` taken at ``positions`` ``(top, left)`` into one ``(H, W)`` map.

    Each crop's map is upsampled (nearest) to the crop's pixels; pixels no crop covers are 0. Runs on the
    maps' device in fp32 and is differentiable, so a spatial loss can use it.
    """
    up = F.interpolate(maps.float(), size=(crop, crop), mode="nearest")[:, 0]
    total = up.new_zeros(height, width)
    count = up.new_zeros(height, width)
    for m, (top, left) in zip(up, positions):
        total[top:top + crop, left:left + crop] += m
        count[top:top + crop, left:left + crop] += 1
    return total / count.clamp(min=1)


@torch.inference_mode()
def score_pairs(model: AHIQ, pairs: Sequence[tuple[Path, Path]], crops: str = "center", crop_size: int = 224,
                seed: int = 1919, batch_size: int = 4, precision: str = "fp32", num_workers: int = 0,
                with_maps: bool = False, progress: bool = True, flip_tta: bool = False) -> Iterator[PairScore]:
    """Yield a :class:`PairScore` per pair, in order. ``batch_size`` pairs (all their crops) per forward.

    With ``flip_tta`` each crop's score is the mean of the crop and its left-right mirror (maps: unflipped).
    """
    if crop_size % 32:
        raise UserError(f"{arg('crop_size')}{crop_size}: must be a multiple of 32")
    device = next(model.parameters()).device
    loader = DataLoader(_PairImages(pairs), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=lambda batch: batch, pin_memory=device.type == "cuda")
    bar = tqdm(total=len(pairs), desc="score", unit="pair", disable=not progress or len(pairs) < 2)
    for batch in loader:
        layout = []
        for i, dist, ref in batch:
            h, w = dist.shape[-2:]
            if ref.shape != dist.shape:
                raise UserError(f"{pairs[i][0]}: size differs from its reference {pairs[i][1]}")
            layout.append((i, crop_positions(crops, h, w, crop_size, seed), h, w))
        dist_t = crop_batch([d for _, d, _ in batch], [pos for _, pos, _, _ in layout], crop_size).to(device)
        ref_t = crop_batch([r for _, _, r in batch], [pos for _, pos, _, _ in layout], crop_size).to(device)
        if flip_tta:
            dist_t, ref_t = torch.cat((dist_t, dist_t.flip(-1))), torch.cat((ref_t, ref_t.flip(-1)))
        with precision_context(precision, device):
            scores, f, w = model(dist_t, ref_t, return_maps=True)
        scores = scores.float().cpu()
        if flip_tta:
            half = len(scores) // 2
            scores, f, w = (scores[:half] + scores[half:]) / 2, f[:half], w[:half]
        start = 0
        for i, positions, h, w_img in layout:
            part = slice(start, start + len(positions))
            start += len(positions)
            result = PairScore(pairs[i][0], pairs[i][1], float(scores[part].mean()), scores[part].tolist())
            if with_maps:
                result.score_map = paste_maps(f[part], positions, h, w_img, crop_size).cpu().numpy()
                result.weight_map = paste_maps(w[part], positions, h, w_img, crop_size).cpu().numpy()
            yield result
        bar.update(len(batch))
    bar.close()
