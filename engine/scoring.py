"""Score whole image pairs with a crop protocol, streaming: a forward pass holds at most ``batch_size`` crops.

Each reference's crops are encoded once and serve all its distorted images. Batches never cross a *segment* (whole
references, at least two batches of crops), so a run split over ranks (:func:`shard`) batches every crop as a
single process does, bit for bit.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ahiq.data.crops import crop_windows, parse_crops
from ahiq.data.images import common_depth, read_image
from ahiq.engine.device import PRECISIONS, precision_context, usable_workers
from ahiq.models.ahiq import AHIQ
from ahiq.models.checkpoint import CheckpointRecord, load_model
from ahiq.models.config import SEED, check_crop_size
from ahiq.models.reference import ReferenceSide
from ahiq.utils.errors import UserError, arg

SEGMENT_BATCHES = 2  # a segment holds at least this many batches of crops: few partial batches, fine shards
Window = tuple[int, int, int, bool]  # (top, left, times the protocol places it, mirrored)


def load_seeded(checkpoint: str | None, device: str | torch.device = "auto", seed: int | None = None,
                **options) -> AHIQ:
    """:func:`models.checkpoint.load_model`, its random parts drawn from ``seed`` (None: ``SEED``), the caller's RNG
    untouched: the network as score.py, test.py, ``create_metric`` and :class:`engine.loss.AHIQLoss` load it."""
    seed = SEED if seed is None else seed
    with torch.random.fork_rng(devices=[]):  # built on the CPU: only its generator is drawn from, and restored
        torch.random.default_generator.manual_seed(seed)
        return load_model(checkpoint, **options, default_seed=seed, device=device)


@dataclass
class PairScore:
    """The score of one pair: the mean over its crops; maps ``(H, W)`` at image resolution when asked for."""

    dist: Path
    ref: Path
    score: float
    crop_scores: list[float]
    score_map: np.ndarray | None = None  # NaN where no crop covered the image
    weight_map: np.ndarray | None = None


@dataclass(frozen=True)
class CropPlanner:
    """How pairs are cropped and run: protocol, crop side (None: the model's), precision, flip TTA."""

    crops: str = "center"
    crop: int | None = None
    precision: str = "fp32"
    flip_tta: bool = False

    def __post_init__(self):
        parse_crops(self.crops)
        if self.precision not in PRECISIONS:
            raise UserError(f"{arg('precision')}{self.precision}: use one of {', '.join(PRECISIONS)}")
        if self.crop is not None:
            check_crop_size(self.crop)

    def for_model(self, model: AHIQ) -> CropPlanner:
        """This planner, its crop (when None) the training crop ``model``'s checkpoint records, else 224."""
        return replace(self, crop=(model.record or CheckpointRecord()).crop(self.crop))

    def windows(self, height: int, width: int, seed: int | None = None,
                draw: Callable[[int, int], list[int]] | None = None) -> list[Window]:
        """:func:`data.crops.crop_windows` of an image ``height x width``, each followed by its mirror with TTA."""
        mirrors = (False, True) if self.flip_tta else (False,)
        return [(top, left, times, mirrored) for top, left, times in
                crop_windows(self.crops, height, width, self.crop, seed, draw) for mirrored in mirrors]

    def piece(self, image: torch.Tensor, window: Window) -> torch.Tensor:
        """The crop ``(3, crop, crop)`` of ``image`` ``(3, H, W)`` at ``window``: a view, or a mirrored copy."""
        top, left, _, mirrored = window
        view = image[:, top:top + self.crop, left:left + self.crop]
        return view.flip(-1) if mirrored else view

    def cut(self, images: torch.Tensor, windows: Sequence[Sequence[Window]]) -> torch.Tensor:
        """The crops ``(sum of windows, 3, crop, crop)`` of ``windows[i]`` in ``images[i]`` ``(3, H, W)``."""
        if images.shape[-2:] == (self.crop, self.crop) and all(len(w) == 1 and not w[0][3] for w in windows):
            return images
        return torch.stack([self.piece(image, window) for image, mine in zip(images, windows) for window in mine])

    def forward(self, model: AHIQ, dist: torch.Tensor, ref: torch.Tensor | ReferenceSide, return_maps: bool = False):
        """``model`` at ``precision`` on crops ``dist`` against reference crops, or their encoded side."""
        with precision_context(self.precision, dist.device):
            if isinstance(ref, ReferenceSide):
                return model.score_distorted(dist, ref, return_maps=return_maps)
            return model(dist, ref, return_maps=return_maps)

    def encode(self, model: AHIQ, refs: torch.Tensor, chunk: int) -> ReferenceSide:
        """The side of reference crops ``refs`` ``(N, 3, crop, crop)``, encoded ``chunk`` crops at a time."""
        with precision_context(self.precision, refs.device):
            return ReferenceSide.cat([model.encode_reference(part) for part in refs.split(chunk)])

    def crop_scores(self, scores: torch.Tensor, windows: Sequence[Window]) -> torch.Tensor:
        """The protocol's crop scores ``(N,)``: mirrors averaged, each window repeated as often as placed."""
        if self.flip_tta:
            scores = (scores[0::2] + scores[1::2]) / 2
        return scores.repeat_interleave(torch.tensor([w[2] for w in windows if not w[3]], device=scores.device))

    def paste(self, maps: torch.Tensor, windows: Sequence[Window], height: int, width: int,
              fill: float = 0.0) -> torch.Tensor:
        """The maps ``(N, 1, h, w)`` of the unmirrored ``windows`` averaged into one differentiable ``(H, W)`` map."""
        up = F.interpolate(maps.float(), size=(self.crop, self.crop), mode="nearest")[:, 0]
        total, count = up.new_zeros(height, width), up.new_zeros(height, width)
        for m, (top, left, times, _) in zip(up, [w for w in windows if not w[3]]):
            total[top:top + self.crop, left:left + self.crop] += m * times
            count[top:top + self.crop, left:left + self.crop] += times
        return torch.where(count > 0, total / count.clamp(min=1), fill)


def crop_batch(images: Sequence[torch.Tensor], positions: Sequence[Sequence[tuple[int, int]]], crop: int) -> torch.Tensor:
    """The crops ``(top, left)`` of each image ``(3, H, W)`` stacked: ``(sum of crops, 3, crop, crop)``."""
    images = common_depth(images)
    return torch.stack([img[:, t:t + crop, x:x + crop] for img, pos in zip(images, positions) for t, x in pos])


def reference_order(pairs: Sequence[tuple[Path, Path]]) -> list[int]:
    """Indices of ``pairs`` grouped by reference (references in order of first appearance, pairs in order)."""
    first: dict[str, int] = {}
    for i, (_, ref) in enumerate(pairs):
        first.setdefault(str(ref), i)
    return sorted(range(len(pairs)), key=lambda i: (first[str(pairs[i][1])], i))


def segments(pairs: Sequence[tuple[Path, Path]], crops_per_pair: int, batch_size: int) -> list[list[int]]:
    """Pair indices by reference, cut at references into runs of at least ``SEGMENT_BATCHES`` batches of crops."""
    order, out, crops = reference_order(pairs), [], 0
    for k, i in enumerate(order):
        if not out or (crops >= SEGMENT_BATCHES * batch_size and str(pairs[order[k - 1]][1]) != str(pairs[i][1])):
            out.append([])
            crops = 0
        out[-1].append(i)
        crops += crops_per_pair
    return out


def shard(parts: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """The segments rank ``rank`` of ``world`` scores: contiguous ones, balanced by pair count."""
    total, mine, seen = sum(map(len, parts)), [], 0
    for part in parts:
        if total * rank <= (seen + len(part) / 2) * world < total * (rank + 1):
            mine.append(part)
        seen += len(part)
    return mine


def crops_per_pair(crops: str, flip_tta: bool = False) -> int:
    """Crop pairs the network sees per image pair: the protocol's count, twice with the mirrored pass."""
    return parse_crops(crops)[1] * (2 if flip_tta else 1)


def plan(pairs: Sequence[tuple[Path, Path]], crops: str, batch_size: int, flip_tta: bool = False, world: int = 1,
         done: set[int] = frozenset()) -> list[list[list[int]]]:
    """Each rank's share of the :func:`segments` not all in ``done`` (partly done ones are scored again whole)."""
    parts = [part for part in segments(pairs, crops_per_pair(crops, flip_tta), batch_size) if not set(part) <= done]
    return [shard(parts, rank, world) for rank in range(world)]


def _to_chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def quiet_worker(_: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle: no worker tracebacks


class _Images(Dataset):
    """Item ``j``: ``(pair index, dist, ref or None)``; a reference is decoded for its first pair only."""

    def __init__(self, pairs, order: Sequence[int], read: Callable[[Path], np.ndarray]):
        self.pairs, self.order, self.read = pairs, list(order), read

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, j: int):
        i = self.order[j]
        dist, ref = self.pairs[i]
        new_ref = j == 0 or str(self.pairs[self.order[j - 1]][1]) != str(ref)
        return i, _to_chw(self.read(dist)), _to_chw(self.read(ref)) if new_ref else None


@dataclass
class _Pair:
    """A pair being scored: its windows and what came back for each (maps: of the unmirrored windows)."""

    index: int
    windows: list[Window]
    height: int
    width: int
    scores: list[float] = field(default_factory=list)
    maps: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


class _Stream:
    """What :func:`score_stream` holds between batches: the queued crops and the references they use."""

    def __init__(self, model: AHIQ, planner: CropPlanner, pairs, seed: int, batch_size: int, with_maps: bool,
                 reuse_reference: bool, progress: Callable[[float], None] | None):
        self.model, self.planner, self.pairs, self.seed = model, planner, pairs, seed
        self.batch_size, self.with_maps, self.reuse, self.progress = batch_size, with_maps, reuse_reference, progress
        self.device = next(model.parameters()).device
        self.refs: dict[str, tuple[list[Window], torch.Size]] = {}
        self.sides: dict[str, torch.Tensor | ReferenceSide] = {}
        self.queue: list[tuple[_Pair, int, torch.Tensor, str]] = []  # (pair, window, crop, reference key)
        self.fresh: list[str] = []  # references this batch starts, not yet encoded

    def add(self, i: int, dist: torch.Tensor, ref: torch.Tensor | None) -> Iterator[tuple[int, PairScore]]:
        """Queue pair ``i``'s crops (``ref``: its reference, decoded for the first of its pairs only)."""
        key = str(self.pairs[i][1])
        if ref is not None:
            windows = self.planner.windows(ref.shape[-2], ref.shape[-1], self.seed)
            self.refs[key], self.sides[key] = (windows, ref.shape), self.planner.cut(ref[None], [windows])
            if self.reuse:
                self.fresh.append(key)
        windows, ref_shape = self.refs[key]
        if dist.shape != ref_shape:
            raise UserError(f"{self.pairs[i][0]}: size differs from its reference {self.pairs[i][1]}")
        work = _Pair(i, windows, dist.shape[-2], dist.shape[-1])
        for k, window in enumerate(windows):
            self.queue.append((work, k, self.planner.piece(dist, window), key))
            if len(self.queue) == self.batch_size:
                yield from self.flush()

    def flush(self) -> Iterator[tuple[int, PairScore]]:
        """Score the queued crops; yield the pairs they complete."""
        if not self.queue:
            return
        scores, f, w = self._forward()
        done = []
        for k, (work, window, _, _) in enumerate(self.queue):
            work.scores.append(float(scores[k]))
            if self.with_maps and not work.windows[window][3]:
                work.maps.append((f[k].float().cpu(), w[k].float().cpu()))
            if len(work.scores) == len(work.windows):
                done.append(work)
        last = self.queue[-1][3]  # only the last reference can continue into the next batch
        self.refs = {last: self.refs[last]}
        self.sides = {last: self.sides[last].clone() if self.reuse else self.sides[last]}  # the batch's side freed
        self.queue, self.fresh = [], []
        for work in done:
            result = self._result(work)
            if self.progress is not None:
                self.progress(1.0)
            yield work.index, result

    def _forward(self):
        if self.fresh:  # every reference the batch starts, together, in chunks of batch_size
            stacked = torch.cat(common_depth([self.sides[key] for key in self.fresh])).to(self.device)
            encoded, start = self.planner.encode(self.model, stacked, self.batch_size), 0
            for key in self.fresh:
                n = len(self.sides[key])
                self.sides[key] = encoded.select(slice(start, start + n))
                start += n
        dist = torch.stack(common_depth([c for _, _, c, _ in self.queue])).to(self.device)
        if self.reuse:
            ref = ReferenceSide.cat([self.sides[key].select(slice(w, w + 1)) for _, w, _, key in self.queue])
        else:
            ref = torch.stack(common_depth([self.sides[key][w] for _, w, _, key in self.queue])).to(self.device)
        scores, f, w = self.planner.forward(self.model, dist, ref, return_maps=True)
        return scores.float().cpu(), f, w

    def _result(self, work: _Pair) -> PairScore:
        dist, ref = self.pairs[work.index]
        crop_scores = self.planner.crop_scores(torch.tensor(work.scores, dtype=torch.float64), work.windows).tolist()
        result = PairScore(dist, ref, float(torch.tensor(crop_scores).mean()), crop_scores)
        if not np.isfinite(result.score):
            raise UserError(f"{dist}: the network scores it {result.score} (the checkpoint's weights or these "
                            "images give non-finite values); nothing more is scored")
        if self.with_maps:  # NaN where no crop looked: no score there
            for name, maps in zip(("score_map", "weight_map"), zip(*work.maps)):
                pasted = self.planner.paste(torch.stack(maps), work.windows, work.height, work.width, np.nan)
                setattr(result, name, pasted.numpy())
        return result


@torch.inference_mode()
def score_stream(model: AHIQ, pairs: Sequence[tuple[Path, Path]], crops: str = "center", crop_size: int | None = None,
                 seed: int = SEED, batch_size: int = 16, precision: str = "fp32", num_workers: int = 0,
                 with_maps: bool = False, flip_tta: bool = False, reuse_reference: bool = True,
                 parts: Sequence[Sequence[int]] | None = None, read: Callable[[Path], np.ndarray] = read_image,
                 progress: Callable[[float], None] | None = None) -> Iterator[tuple[int, PairScore]]:
    """``(pair index, PairScore)`` as pairs complete, for the :func:`segments` ``parts`` (None: all; see score_pairs)."""
    planner = CropPlanner(crops, crop_size, precision, flip_tta).for_model(model)
    parts = segments(pairs, crops_per_pair(crops, flip_tta), batch_size) if parts is None else parts
    order = [i for part in parts for i in part]
    ends = {part[-1] for part in parts if part}
    stream = _Stream(model, planner, pairs, seed, batch_size, with_maps, reuse_reference, progress)
    num_workers = usable_workers(num_workers)
    loader = DataLoader(_Images(pairs, order, read), batch_size=None, num_workers=num_workers,
                        worker_init_fn=quiet_worker if num_workers else None, pin_memory=stream.device.type == "cuda")
    for i, dist, ref in loader:
        yield from stream.add(i, dist, ref)
        if i in ends:
            yield from stream.flush()
    yield from stream.flush()


@torch.inference_mode()
def score_pairs(model: AHIQ, pairs: Sequence[tuple[Path, Path]], crops: str = "center", crop_size: int | None = None,
                seed: int = SEED, batch_size: int = 16, precision: str = "fp32", num_workers: int = 0,
                with_maps: bool = False, progress: bool = True, flip_tta: bool = False,
                reuse_reference: bool = True) -> Iterator[PairScore]:
    """Yield a :class:`PairScore` per pair, in the order of ``pairs``; at most ``batch_size`` crops per forward.

    ``crop_size``: default the model's training crop, else 224. ``reuse_reference=False`` runs
    ``forward(dist, ref)`` for every crop pair (the same scores to fp32 rounding). ``flip_tta``: each crop's score is
    the mean of the crop and its mirror. ``progress``: a tqdm bar by pairs.
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
