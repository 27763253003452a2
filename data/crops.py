"""Crop protocols: where the crops of one image pair are taken.

``center``; ``five`` (4 corners + centre, the authors' validation positions); ``nine`` (``five`` plus the
4 edge midpoints, the authors' order); ``random:N`` (N seeded uniform positions that can reach the last
row and column, unlike the authors' ``randint(0, h - 224)``); ``grid:N`` (N positions on a uniform
rows x cols grid spanning the image, corners included).

Every protocol's windows depend on the image size (and, for ``random:N``, the seed) alone, so all distorted
images of a reference share its crops and scoring computes the reference's side once (``engine.scoring``).
"""
from __future__ import annotations

import math

import numpy as np

from utils.errors import UserError, arg

PROTOCOLS = "center, five, nine, random:N, grid:N"
REUSE_NOTE = ("each reference's crops go through the network once for all its distorted images (every protocol "
              "qualifies: its windows depend only on the image size and --seed)")


def parse_crops(spec: str) -> tuple[str, int]:
    """``'random:20'`` -> ``('random', 20)``; ``'five'`` -> ``('five', 5)``. Bad specs are a UserError."""
    kind, _, count = spec.partition(":")
    fixed = {"center": 1, "five": 5, "nine": 9}
    if kind in fixed and not count:
        return kind, fixed[kind]
    if kind in ("random", "grid") and count.isdigit() and int(count) > 0:
        return kind, int(count)
    raise UserError(f"{arg('crops')}{spec}: unknown crop protocol; use one of {PROTOCOLS}")


def _grid_shape(n: int, height: int, width: int) -> tuple[int, int]:
    rows = max(d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0)
    cols = n // rows
    return (cols, rows) if height > width else (rows, cols)


def crop_positions(spec: str, height: int, width: int, crop: int, seed: int = 1919) -> list[tuple[int, int]]:
    """``(top, left)`` of each crop of size ``crop`` in an image of ``height x width`` under protocol ``spec``."""
    kind, n = parse_crops(spec)
    if height < crop or width < crop:
        raise UserError(f"image {width}x{height} is smaller than the {crop}x{crop} crop; "
                        f"use a smaller {arg('crop_size')}value")
    bottom, right = height - crop, width - crop
    mid_top, mid_left = height // 2 - crop // 2, width // 2 - crop // 2
    if kind == "random":
        rng = np.random.RandomState(seed)
        tops = rng.randint(0, bottom + 1, size=n)
        lefts = rng.randint(0, right + 1, size=n)
        return [(int(t), int(left)) for t, left in zip(tops, lefts)]
    if kind == "grid":
        rows, cols = _grid_shape(n, height, width)
        tops = np.linspace(0, bottom, rows).round().astype(int) if rows > 1 else [bottom // 2]
        lefts = np.linspace(0, right, cols).round().astype(int) if cols > 1 else [right // 2]
        return [(int(t), int(left)) for t in tops for left in lefts]
    authors_order = [(0, 0), (0, right), (bottom, 0), (bottom, right), (mid_top, mid_left),
                     (mid_top, 0), (mid_top, right), (0, mid_left), (bottom, mid_left)]
    if kind == "center":
        return [authors_order[4]]
    return authors_order[:n]
