"""Crop protocols (center, five, nine, random:N, grid:N): where the crops of an image pair are taken, a function of
the image size (and seed) alone, so all distorted images of a reference share its crops."""
from __future__ import annotations

import math
from collections import Counter
from typing import Callable

import numpy as np

from ahiq.utils.errors import UserError, arg

# Where training crops may start: anywhere (full) or the authors' randint(0, side - crop) (never the last row)
CROP_RULES = ("full", "authors")
FLIPS = ("horizontal", "vertical", "none")  # training's random flip; vertical: the authors' accident

PROTOCOLS = "center, five, nine, random:N, grid:N"
MAX_CROPS = 10_000
REUSE_NOTE = ("each reference's crops go through the network once for all its distorted images, and a window "
              "placed twice is computed once")


def parse_crops(spec: str) -> tuple[str, int]:
    """``'random:20'`` -> ``('random', 20)``; ``'five'`` -> ``('five', 5)``. Bad specs are a UserError."""
    kind, _, count = str(spec).partition(":")
    fixed = {"center": 1, "five": 5, "nine": 9}
    if kind in fixed and not count:
        return kind, fixed[kind]
    if kind in ("random", "grid"):
        if not (count.isascii() and count.isdigit()) or not 1 <= int(count) <= MAX_CROPS:
            raise UserError(f"{arg('crops')}{spec}: give the number of crops, 1..{MAX_CROPS:,}, e.g. {kind}:20")
        return kind, int(count)
    raise UserError(f"{arg('crops')}{spec}: unknown crop protocol; use one of {PROTOCOLS}")


def _grid_rows(n: int, height: int, width: int) -> list[int]:
    """Crops per row of ``grid:n``: rows x cols when ``n`` factors so, else rows of nearly equal length."""
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    if rows > 1 or n <= 3:
        rows = n // rows if height > width else rows
        return [n // rows] * rows
    rows = min(max(2, round(math.sqrt(n * height / width))), n // 2)
    return [n // rows + (i < n % rows) for i in range(rows)]


def crop_positions(spec: str, height: int, width: int, crop: int, seed: int | None = None,
                   draw: Callable[[int, int], list[int]] | None = None) -> list[tuple[int, int]]:
    """``(top, left)`` of each crop of protocol ``spec``; ``random:N`` draws from ``RandomState(seed)`` or from
    ``draw(high, n)`` (n ints in ``[0, high)``)."""
    kind, n = parse_crops(spec)
    if height < crop or width < crop:
        raise UserError(f"image {width}x{height} is smaller than the {crop}x{crop} crop; "
                        f"use a smaller {arg('crop_size')}value")
    bottom, right = height - crop, width - crop
    mid_top, mid_left = height // 2 - crop // 2, width // 2 - crop // 2
    if kind == "random":
        if draw is None:
            if seed is None:
                raise ValueError(f"crop_positions({spec!r}): random crops need a seed or a draw function")
            rng = np.random.RandomState(seed)
            draw = lambda high, k: rng.randint(0, high, size=k).tolist()  # noqa: E731
        tops, lefts = draw(bottom + 1, n), draw(right + 1, n)
        return [(int(t), int(left)) for t, left in zip(tops, lefts)]
    if kind == "grid":
        counts = _grid_rows(n, height, width)
        span = lambda end, k: np.linspace(0, end, k).round().astype(int).tolist() if k > 1 else [end // 2]  # noqa: E731
        return [(top, left) for top, k in zip(span(bottom, len(counts)), counts) for left in span(right, k)]
    authors_order = [(0, 0), (0, right), (bottom, 0), (bottom, right), (mid_top, mid_left),
                     (mid_top, 0), (mid_top, right), (0, mid_left), (bottom, mid_left)]
    return [authors_order[4]] if kind == "center" else authors_order[:n]


def crop_windows(spec: str, height: int, width: int, crop: int, seed: int | None = None,
                 draw: Callable[[int, int], list[int]] | None = None) -> list[tuple[int, int, int]]:
    """The distinct windows of :func:`crop_positions` in order, as ``(top, left, times placed)``."""
    return [(top, left, k) for (top, left), k in Counter(crop_positions(spec, height, width, crop, seed, draw)).items()]
