"""Score whole image pairs with a crop protocol: all crops of a batch of pairs in one forward pass.

Pairs are taken reference by reference: a reference's crops go through the network once
(:meth:`AHIQ.encode_reference`) and serve every distorted image of that reference, across batches too; every
crop protocol qualifies, since its windows depend on the image size and the seed alone (``data.crops``).
``reuse_reference=False`` runs each pair through ``forward(dist, ref)`` instead (same scores to fp32 rounding).
"""
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
from data.images import common_depth, read_image
from engine.device import precision_context
from models.ahiq import AHIQ, ReferenceSide
from utils.errors import UserError, arg


@dataclass
class PairScore:
    """The score of one pair: mean over its crops; maps ``(H, W)`` at image resolution when asked for."""

    dist: Path
    ref: Path
    score: float
    crop_scores: list[float]
    score_map: np.ndarray | None = None  # NaN where no crop covered the image
    weight_map: np.ndarray | None = None


def _to_chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class _PairImages(Dataset):
    def __init__(self, pairs: Sequence[tuple[Path, Path]]):
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        dist, ref = self.pairs[i]
        return i, _to_chw(read_image(dist)), _to_chw(read_image(ref))


def reference_order(pairs: Sequence[tuple[Path, Path]]) -> list[int]:
    """Indices of ``pairs`` grouped by reference (references in order of first appearance, pairs in order)."""
    first: dict[str, int] = {}
    for i, (_, ref) in enumerate(pairs):
        first.setdefault(str(ref), i)
    return sorted(range(len(pairs)), key=lambda i: (first[str(pairs[i][1])], i))


class _GroupedImages(Dataset):
    """Item ``j`` of ``order``: ``(pair index, distorted image, reference image or None)``; the reference is
    decoded only for the first of its pairs (``order`` keeps a reference's pairs together)."""

    def __init__(self, pairs: Sequence[tuple[Path, Path]], order: Sequence[int]):
        self.pairs, self.order = list(pairs), list(order)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, j: int):
        i = self.order[j]
        dist, ref = self.pairs[i]
        new_ref = j == 0 or str(self.pairs[self.order[j - 1]][1]) != str(ref)
        return i, _to_chw(read_image(dist)), _to_chw(read_image(ref)) if new_ref else None


def crop_batch(images: Sequence[torch.Tensor], positions: Sequence[Sequence[tuple[int, int]]], crop: int) -> torch.Tensor:
    """Stack the crops ``(top, left)`` of each image ``(3, H, W)`` into ``(sum of crops, 3, crop, crop)``
    (all as float in [0, 1] when 8-bit and 16-bit images meet)."""
    images = common_depth(images)
    return torch.stack([img[:, t:t + crop, x:x + crop] for img, pos in zip(images, positions) for t, x in pos])


def coverage(positions: Sequence[tuple[int, int]], height: int, width: int, crop: int) -> np.ndarray:
    """``(H, W)`` bool: the pixels that some crop at ``positions`` ``(top, left)`` covers."""
    covered = np.zeros((height, width), dtype=bool)
    for top, left in positions:
        covered[top:top + crop, left:left + crop] = True
    return covered


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


def _pair_scores(pairs, layout, scores: torch.Tensor, f: torch.Tensor, w: torch.Tensor, flip_tta: bool, crop: int,
                 with_maps: bool) -> Iterator[tuple[int, PairScore]]:
    """``(pair index, PairScore)`` for each ``(i, positions, height, width)`` of ``layout``, from the crop
    outputs of one forward (with ``flip_tta``: the crops, then their mirrors)."""
    scores = scores.float().cpu()
    if flip_tta:
        half = len(scores) // 2
        scores, f, w = (scores[:half] + scores[half:]) / 2, f[:half], w[:half]
    start = 0
    for i, positions, height, width in layout:
        part = slice(start, start + len(positions))
        start += len(positions)
        result = PairScore(pairs[i][0], pairs[i][1], float(scores[part].mean()), scores[part].tolist())
        if with_maps:
            covered = coverage(positions, height, width, crop)  # NaN where no crop looked: no score there
            result.score_map = np.where(covered, paste_maps(f[part], positions, height, width, crop).cpu(), np.nan)
            result.weight_map = np.where(covered, paste_maps(w[part], positions, height, width, crop).cpu(), np.nan)
        yield i, result


@torch.inference_mode()
def score_pairs(model: AHIQ, pairs: Sequence[tuple[Path, Path]], crops: str = "center", crop_size: int = 224,
                seed: int = 1919, batch_size: int = 4, precision: str = "fp32", num_workers: int = 0,
                with_maps: bool = False, progress: bool = True, flip_tta: bool = False,
                reuse_reference: bool = True) -> Iterator[PairScore]:
    """Yield a :class:`PairScore` per pair, in the order of ``pairs``; ``batch_size`` distorted images (all their
    crops) per forward.

    With ``reuse_reference`` each reference's crops are encoded once and serve all its distorted images;
    between batches one reference's side is kept (about 1 MB per 224-pixel crop in fp32), within a batch
    those of the references its pairs use. Pairs given out of reference order are scored grouped and held
    until their turn. ``False``: pair by pair through ``forward(dist, ref)``.
    With ``flip_tta`` each crop's score is the mean of the crop and its left-right mirror (maps: unflipped).
    """
    if crop_size % 32:
        raise UserError(f"{arg('crop_size')}{crop_size}: must be a multiple of 32")
    run = _score_reusing_references if reuse_reference else _score_pair_by_pair
    bar = tqdm(total=len(pairs), desc="score", unit="pair", disable=not progress or len(pairs) < 2)
    for result in run(model, pairs, crops, crop_size, seed, batch_size, precision, num_workers, with_maps, flip_tta):
        yield result
        bar.update(1)
    bar.close()


def _score_pair_by_pair(model, pairs, crops, crop_size, seed, batch_size, precision, num_workers, with_maps,
                        flip_tta) -> Iterator[PairScore]:
    device = next(model.parameters()).device
    loader = DataLoader(_PairImages(pairs), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=lambda batch: batch, pin_memory=device.type == "cuda")
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
        for _, result in _pair_scores(pairs, layout, scores, f, w, flip_tta, crop_size, with_maps):
            yield result


def _score_reusing_references(model, pairs, crops, crop_size, seed, batch_size, precision, num_workers, with_maps,
                              flip_tta) -> Iterator[PairScore]:
    device = next(model.parameters()).device
    order = reference_order(pairs)
    loader = DataLoader(_GroupedImages(pairs, order), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=lambda batch: batch, pin_memory=device.type == "cuda")
    # (reference, crop positions, image shape, side): the one reference side kept from batch to batch
    held: tuple[str, list, torch.Size, ReferenceSide] | None = None
    done: dict[int, PairScore] = {}
    next_out = 0
    for batch in loader:
        sides = {held[0]: held[1:]} if held else {}
        new = [(str(pairs[i][1]), ref) for i, _, ref in batch if ref is not None]
        if new:  # all references this batch starts, through the network together
            positions = [crop_positions(crops, r.shape[-2], r.shape[-1], crop_size, seed) for _, r in new]
            ref_t = crop_batch([r for _, r in new], positions, crop_size)
            counts = [len(p) for p in positions]
            if flip_tta:  # per reference: its crops, then their mirrors
                parts = ref_t.split(counts)
                ref_t = torch.cat([torch.cat((c, c.flip(-1))) for c in parts])
                counts = [2 * n for n in counts]
            with precision_context(precision, device):
                encoded = model.encode_reference(ref_t.to(device))
            start = 0
            for (key, ref), pos, n in zip(new, positions, counts):
                sides[key] = (pos, ref.shape, encoded.select(slice(start, start + n)))
                start += n
        base, rows, index, index_flip, layout, dists = {}, [], [], [], [], []
        for i, dist, _ in batch:
            key = str(pairs[i][1])
            positions, ref_shape, side = sides[key]
            if dist.shape != ref_shape:
                raise UserError(f"{pairs[i][0]}: size differs from its reference {pairs[i][1]}")
            if key not in base:
                base[key] = sum(len(s) for s in rows)
                rows.append(side)
            n = len(positions)
            index += range(base[key], base[key] + n)
            index_flip += range(base[key] + n, base[key] + 2 * n)
            layout.append((i, positions, dist.shape[-2], dist.shape[-1]))
            dists.append(dist)
        dist_t = crop_batch(dists, [pos for _, pos, _, _ in layout], crop_size).to(device)
        if flip_tta:
            dist_t, index = torch.cat((dist_t, dist_t.flip(-1))), index + index_flip
        reference = ReferenceSide.cat(rows) if len(rows) > 1 else rows[0]
        with precision_context(precision, device):
            scores, f, w = model.score_distorted(dist_t, reference.select(torch.tensor(index, device=device)),
                                                 return_maps=True)
        del reference
        done.update(_pair_scores(pairs, layout, scores, f, w, flip_tta, crop_size, with_maps))
        last = str(pairs[batch[-1][0]][1])  # the only reference that can continue into the next batch
        if held is None or held[0] != last:
            positions, ref_shape, side = sides[last]
            held = (last, positions, ref_shape, side.clone())  # a copy: the rest of the batch's encoding is freed
        del sides
        while next_out in done:
            yield done.pop(next_out)
            next_out += 1
