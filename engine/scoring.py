"""Score whole image pairs with a crop protocol, streaming: a forward pass holds at most ``batch_size`` crops.

Pairs are taken reference by reference: a reference's crops go through the network once
(:meth:`AHIQ.encode_reference`) and serve every distorted image of that reference, across batches too (every
protocol qualifies: its windows depend on the image size and the seed alone). A window a protocol places twice
is computed once and counts twice. Memory holds one batch of crops, the references it uses, and the maps of the
pairs in flight; results stream out as pairs complete.

The pairs are cut into *segments* (whole references, at least two batches of crops each) and batches never cross
a segment's end, so how crops are batched depends on the pairs alone: a run split over ranks by segments
(:func:`shard`) computes every crop in the same batch as a single process, bit for bit.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ahiq.data.crops import crop_windows, parse_crops
from ahiq.data.images import common_depth, read_image
from ahiq.engine.device import precision_context, usable_workers
from ahiq.models.ahiq import AHIQ
from ahiq.models.checkpoint import CheckpointRecord
from ahiq.models.reference import ReferenceSide
from ahiq.utils.errors import UserError, arg

SEGMENT_BATCHES = 2  # a segment holds at least this many batches of crops: few partial batches, fine shards


@dataclass
class PairScore:
    """The score of one pair: the mean over its crops; maps ``(H, W)`` at image resolution when asked for."""

    dist: Path
    ref: Path
    score: float
    crop_scores: list[float]
    score_map: np.ndarray | None = None  # NaN where no crop covered the image
    weight_map: np.ndarray | None = None


def reference_order(pairs: Sequence[tuple[Path, Path]]) -> list[int]:
    """Indices of ``pairs`` grouped by reference (references in order of first appearance, pairs in order)."""
    first: dict[str, int] = {}
    for i, (_, ref) in enumerate(pairs):
        first.setdefault(str(ref), i)
    return sorted(range(len(pairs)), key=lambda i: (first[str(pairs[i][1])], i))


def segments(pairs: Sequence[tuple[Path, Path]], crops_per_pair: int, batch_size: int) -> list[list[int]]:
    """Pair indices in :func:`reference_order`, cut at reference boundaries into runs of at least
    ``SEGMENT_BATCHES`` batches of crops (counting the protocol's nominal crops per pair)."""
    order, out, crops = reference_order(pairs), [], 0
    for k, i in enumerate(order):
        if not out or (crops >= SEGMENT_BATCHES * batch_size and str(pairs[order[k - 1]][1]) != str(pairs[i][1])):
            out.append([])
            crops = 0
        out[-1].append(i)
        crops += crops_per_pair
    return out


def shard(parts: list[list[int]], rank: int, world: int) -> list[int]:
    """The pair indices rank ``rank`` of ``world`` scores: a contiguous run of the segments ``parts``, the runs
    balanced by pair count (each rank's share ends where the running count passes ``rank + 1`` shares)."""
    total, mine, seen = sum(map(len, parts)), [], 0
    for part in parts:
        if total * rank <= (seen + len(part) / 2) * world < total * (rank + 1):
            mine += part
        seen += len(part)
    return mine


def plan(pairs: Sequence[tuple[Path, Path]], crops: str, batch_size: int, flip_tta: bool = False, rank: int = 0,
         world: int = 1, done: set[int] = frozenset()) -> list[int]:
    """The pair indices rank ``rank`` of ``world`` scores: its share of the :func:`segments` that are not all in
    ``done`` (a segment partly done is scored again whole, so that every crop keeps its batch: a resumed run's
    scores are an uninterrupted run's, bit for bit)."""
    n = parse_crops(crops)[1] * (2 if flip_tta else 1)
    return shard([part for part in segments(pairs, n, batch_size) if not set(part) <= done], rank, world)


def _to_chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def quiet_worker(_: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle: no worker tracebacks


class _Images(Dataset):
    """Item ``j`` of ``order``: ``(pair index, distorted image, reference image or None)``; the reference is decoded
    only for the first of its pairs in ``order``. ``read`` decodes (or takes from screening's decoded images)."""

    def __init__(self, pairs, order: Sequence[int], read: Callable[[Path], np.ndarray]):
        self.pairs, self.order, self.read = pairs, list(order), read

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, j: int):
        i = self.order[j]
        dist, ref = self.pairs[i]
        new_ref = j == 0 or str(self.pairs[self.order[j - 1]][1]) != str(ref)
        return i, _to_chw(self.read(dist)), _to_chw(self.read(ref)) if new_ref else None


def crop_batch(images: Sequence[torch.Tensor], positions: Sequence[Sequence[tuple[int, int]]], crop: int) -> torch.Tensor:
    """Stack the crops ``(top, left)`` of each image ``(3, H, W)`` into ``(sum of crops, 3, crop, crop)`` (all as
    float in [0, 1] when 8-bit and 16-bit images meet)."""
    images = common_depth(images)
    return torch.stack([img[:, t:t + crop, x:x + crop] for img, pos in zip(images, positions) for t, x in pos])


def coverage(positions: Sequence[tuple[int, int]], height: int, width: int, crop: int) -> np.ndarray:
    """``(H, W)`` bool: the pixels that some crop at ``positions`` ``(top, left)`` covers."""
    covered = np.zeros((height, width), dtype=bool)
    for top, left in positions:
        covered[top:top + crop, left:left + crop] = True
    return covered


def paste_maps(maps: torch.Tensor, positions: Sequence[tuple[int, int]], height: int, width: int, crop: int,
               weights: Sequence[int] | None = None) -> torch.Tensor:
    """Average per-crop maps ``(N, 1, h, w)`` taken at ``positions`` ``(top, left)`` into one ``(H, W)`` map, crop
    ``k`` counted ``weights[k]`` times (default once).

    Each crop's map is upsampled (nearest) to the crop's pixels; pixels no crop covers are 0. Runs on the maps'
    device in fp32 and is differentiable, so a spatial loss can use it.
    """
    up = F.interpolate(maps.float(), size=(crop, crop), mode="nearest")[:, 0]
    total, count = up.new_zeros(height, width), up.new_zeros(height, width)
    for k, (m, (top, left)) in enumerate(zip(up, positions)):
        times = 1 if weights is None else weights[k]
        total[top:top + crop, left:left + crop] += m * times
        count[top:top + crop, left:left + crop] += times
    return total / count.clamp(min=1)


@dataclass
class _Pair:
    """A pair being scored: its windows ``(top, left, times placed, mirrored)`` and what came back for each."""

    index: int
    windows: list[tuple[int, int, int, bool]]
    height: int
    width: int
    scores: list = field(default_factory=list)
    maps: list = field(default_factory=list)  # (f, w) of the unmirrored windows

    def result(self, pair: tuple[Path, Path], crop: int, with_maps: bool) -> PairScore:
        tta = self.windows[-1][3]  # with flip_tta every window comes twice: as is, then mirrored
        plain = [w for w in self.windows if not w[3]]
        per_window = [(a + b) / 2 for a, b in zip(self.scores[::2], self.scores[1::2])] if tta else self.scores
        crop_scores = [s for s, w in zip(per_window, plain) for _ in range(w[2])]
        result = PairScore(pair[0], pair[1], float(torch.tensor(crop_scores).mean()), crop_scores)
        if with_maps:
            positions, times = [(t, x) for t, x, _, _ in plain], [k for _, _, k, _ in plain]
            covered = coverage(positions, self.height, self.width, crop)  # NaN where no crop looked: no score there
            for name, maps in (("score_map", [f for f, _ in self.maps]), ("weight_map", [w for _, w in self.maps])):
                pasted = paste_maps(torch.stack(maps), positions, self.height, self.width, crop, times)
                setattr(result, name, np.where(covered, pasted.numpy(), np.nan))
        return result


@torch.inference_mode()
def score_stream(model: AHIQ, pairs: Sequence[tuple[Path, Path]], crops: str = "center", crop_size: int | None = None,
                 seed: int = 1919, batch_size: int = 16, precision: str = "fp32", num_workers: int = 0,
                 with_maps: bool = False, flip_tta: bool = False, reuse_reference: bool = True,
                 indices: Sequence[int] | None = None, read: Callable[[Path], np.ndarray] = read_image,
                 progress: Callable[[float], None] | None = None) -> Iterator[tuple[int, PairScore]]:
    """``(pair index, PairScore)`` as pairs complete, for ``indices`` (default all) of ``pairs`` (see
    :func:`score_pairs` for the arguments); ``progress(pairs)`` is called with each finished fraction of pairs."""
    crop = (model.record or CheckpointRecord()).crop(crop_size)
    if crop % 32:
        raise UserError(f"{arg('crop_size')}{crop}: must be a multiple of 32")
    wanted = set(range(len(pairs)) if indices is None else indices)
    parts = [[i for i in part if i in wanted] for part in segments(pairs, parse_crops(crops)[1] * (1 + flip_tta),
                                                                   batch_size)]
    order = [i for part in parts for i in part]
    ends = {part[-1] for part in parts if part}
    device = next(model.parameters()).device
    num_workers = usable_workers(num_workers)
    loader = DataLoader(_Images(pairs, order, read), batch_size=None, num_workers=num_workers,
                        worker_init_fn=quiet_worker if num_workers else None, pin_memory=device.type == "cuda")
    sides: dict[str, tuple[list, torch.Size, ReferenceSide | torch.Tensor]] = {}  # reference -> windows, shape, side
    queue: list[tuple[_Pair, int, torch.Tensor, str]] = []  # (pair, window, crop, reference) not yet scored
    fresh: list[tuple[str, torch.Tensor]] = []  # references this batch starts: (key, crops), not yet encoded

    def flush() -> Iterator[tuple[int, PairScore]]:
        nonlocal queue, fresh
        if not queue:
            return
        with precision_context(precision, device):
            if reuse_reference and fresh:  # every reference the batch starts, together, in chunks of batch_size
                stacked = torch.cat(common_depth([c for _, c in fresh])).to(device)
                encoded = ReferenceSide.cat([model.encode_reference(chunk) for chunk in stacked.split(batch_size)])
                start = 0
                for key, c in fresh:
                    sides[key] = (*sides[key][:2], encoded.select(slice(start, start + len(c))))
                    start += len(c)
            dist = common_depth([c for _, _, c, _ in queue])
            if reuse_reference:
                rows = ReferenceSide.cat([sides[key][2].select(slice(w, w + 1)) for _, w, _, key in queue])
                scores, f, w_ = model.score_distorted(torch.stack(dist).to(device), rows, return_maps=True)
            else:
                ref = common_depth([sides[key][2][w] for _, w, _, key in queue])
                scores, f, w_ = model(torch.stack(dist).to(device), torch.stack(ref).to(device), return_maps=True)
        scores, done = scores.float().cpu(), []
        for k, (work, window, _, _) in enumerate(queue):
            work.scores.append(float(scores[k]))
            if with_maps and not work.windows[window][3]:
                work.maps.append((f[k].float().cpu(), w_[k].float().cpu()))
            if len(work.scores) == len(work.windows):
                done.append(work)
        last = queue[-1][3]
        for key in [k for k in sides if k != last]:  # only the last reference can continue into the next batch
            del sides[key]
        if reuse_reference and isinstance(sides[last][2], ReferenceSide):
            sides[last] = (*sides[last][:2], sides[last][2].clone())  # alone: the rest of the encoding is freed
        queue, fresh = [], []
        for work in done:
            result = work.result(pairs[work.index], crop, with_maps)
            if not np.isfinite(result.score):
                raise UserError(f"{pairs[work.index][0]}: the network scores it {result.score} (the checkpoint's "
                                "weights or these images give non-finite values); nothing more is scored")
            if progress is not None:
                progress(1.0)
            yield work.index, result

    for i, dist, ref in loader:
        key = str(pairs[i][1])
        if ref is not None:
            windows = [(t, x, k, m) for t, x, k in crop_windows(crops, ref.shape[-2], ref.shape[-1], crop, seed)
                       for m in ((False, True) if flip_tta else (False,))]
            cut = torch.stack([(ref[:, t:t + crop, x:x + crop].flip(-1) if m else ref[:, t:t + crop, x:x + crop])
                               for t, x, _, m in windows])
            sides[key] = (windows, ref.shape, cut)
            if reuse_reference:
                fresh.append((key, cut))
        windows, ref_shape, _ = sides[key]
        if dist.shape != ref_shape:
            raise UserError(f"{pairs[i][0]}: size differs from its reference {pairs[i][1]}")
        work = _Pair(i, windows, dist.shape[-2], dist.shape[-1])
        for window, (t, x, _, m) in enumerate(windows):
            piece = dist[:, t:t + crop, x:x + crop]
            queue.append((work, window, piece.flip(-1) if m else piece, key))
            if len(queue) == batch_size:
                yield from flush()
        if i in ends:
            yield from flush()
    yield from flush()


@torch.inference_mode()
def score_pairs(model: AHIQ, pairs: Sequence[tuple[Path, Path]], crops: str = "center", crop_size: int | None = None,
                seed: int = 1919, batch_size: int = 16, precision: str = "fp32", num_workers: int = 0,
                with_maps: bool = False, progress: bool = True, flip_tta: bool = False,
                reuse_reference: bool = True) -> Iterator[PairScore]:
    """Yield a :class:`PairScore` per pair, in the order of ``pairs``; at most ``batch_size`` crops per forward.

    ``crop_size``: default the model's training crop as its checkpoint records it (``model.record``), else 224.
    With ``reuse_reference`` each reference's crops are encoded once and serve all its distorted images
    (``False``: ``forward(dist, ref)`` for every crop pair; the same scores to fp32 rounding). ``flip_tta``: each
    crop's score is the mean of the crop and its left-right mirror (maps: unmirrored). Pairs given out of
    reference order are scored grouped and held until their turn. ``progress``: a tqdm bar by pairs.
    """
    bar = tqdm(total=len(pairs), desc="score", unit="pair", disable=not progress, leave=False)
    done: dict[int, PairScore] = {}
    next_out = 0
    for i, result in score_stream(model, pairs, crops, crop_size, seed, batch_size, precision, num_workers,
                                  with_maps, flip_tta, reuse_reference, progress=bar.update):
        done[i] = result
        while next_out in done:
            yield done.pop(next_out)
            next_out += 1
    bar.close()
