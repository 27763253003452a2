"""Screening image pairs before any long work: every image decoded once, in threads, the problems reported in one list,
what passes kept decoded for the scorer within a memory budget."""
from __future__ import annotations

import functools
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from tqdm import tqdm

from ahiq.data.images import (DECODED_BYTES_PER_PIXEL, MAX_PIXELS, ImageHeader, decode_image, folder_names,
                              image_not_found)
from ahiq.data.images import read_header, read_image
from ahiq.data.records import Pair
from ahiq.utils.errors import UserError, arg, flag, note, plain


class Problem(NamedTuple):
    """A problem of pair ``index``; those of one ``group`` are reported as one line with their count."""

    index: int
    message: str
    group: str | None = None


class DecodedImages:
    """Decoded images kept from screening for the scorer, up to ``budget`` bytes; :meth:`take` hands one over."""

    def __init__(self, budget: int = 512 << 20, max_pixels: int | None = MAX_PIXELS):
        self.budget, self.used, self.images, self.lock = budget, 0, {}, threading.Lock()
        self.max_pixels = max_pixels  # for the images read again (those beyond the budget)

    def keep(self, path: Path, image: np.ndarray) -> None:
        with self.lock:  # screening threads keep images at once
            if self.used + image.nbytes <= self.budget and path not in self.images:
                self.images[path] = image
                self.used += image.nbytes

    def take(self, path: Path) -> np.ndarray:
        image = self.images.pop(path, None)
        if image is None:
            return read_image(path, self.max_pixels)
        self.used -= image.nbytes
        return image


class MemoryGate:
    """At most ``capacity`` bytes of decodes in flight across threads (one larger decode runs alone)."""

    def __init__(self, capacity: int = 2 << 30):
        self.capacity, self.used, self.cond = capacity, 0, threading.Condition()

    def take(self, size: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.used == 0 or self.used + size <= self.capacity)
            self.used += size

    def give(self, size: int) -> None:
        with self.cond:
            self.used -= size
            self.cond.notify_all()


def _inspect(path: Path, gate: MemoryGate, keep: DecodedImages | None,
             max_pixels: int | None) -> ImageHeader | str:
    """The header of one file decoded in full, or its problem."""
    try:
        header = read_header(path, max_pixels=max_pixels)
        size = header.height * header.width * DECODED_BYTES_PER_PIXEL
        gate.take(size)
        try:
            header, image = decode_image(path, max_pixels, check_body=True)
        finally:
            gate.give(size)
        if keep is not None:
            keep.keep(path, image)
        return header
    except UserError as err:
        return err.template  # arguments named as the running entry point names them


def _pair_problem(i: int, pair: Pair, info: dict, is_dir: Callable[[Path], bool], listed: Callable[[Path], dict],
                  crop: int) -> Problem | None:
    for folder in (pair.ref.parent, pair.dist.parent):  # a missing folder is one problem, not one per pair
        if not is_dir(folder):
            return Problem(i, f"{folder}{os.sep} not found (image folder)", str(folder))
    if pair.ref not in info:  # info holds every file found (check_pairs_on_disk)
        return Problem(i, f"{pair.dist}: its reference {pair.ref.name} is not in {pair.ref.parent}; add it, or "
                          "remove or rename the distorted image")
    sizes = []
    for path in (pair.dist, pair.ref):  # a folder is listed once however many of its files are missing
        found = info[path] if path in info else image_not_found(path, listed(path.parent)).template
        if isinstance(found, str):
            return Problem(i, found)
        sizes.append((found.height, found.width))
    if sizes[0] != sizes[1]:
        return Problem(i, f"{pair.dist}: size {sizes[0][1]}x{sizes[0][0]} differs from its reference {pair.ref} "
                          f"({sizes[1][1]}x{sizes[1][0]})")
    if min(sizes[0]) < crop:
        return Problem(i, f"{pair.dist} ({sizes[0][1]}x{sizes[0][0]})", "small")
    return None


def check_pairs_on_disk(pairs: list[Pair], crop: int, keep: DecodedImages | None = None,
                        max_pixels: int | None = MAX_PIXELS) -> tuple[list[Problem], dict[Path, ImageHeader | str]]:
    """Problems of the pairs' images (missing, undecodable, over ``max_pixels``, sizes differing, smaller than ``crop``)
    and what :func:`_inspect` found of each file, every file decoded in full once, in threads (``keep`` keeps them)."""
    gate = MemoryGate()
    paths = [p for p in dict.fromkeys(p for pair in pairs for p in (pair.ref, pair.dist)) if p.is_file()]
    with ThreadPoolExecutor(max_workers=8) as pool:  # a bar where a person would wait (a dataset's files)
        found = pool.map(lambda path: _inspect(path, gate, keep, max_pixels), paths)
        info = dict(zip(paths, tqdm(found, total=len(paths), desc="check images", unit="file",
                                    disable=len(paths) < 500, leave=False)))
    is_dir, listed = functools.cache(Path.is_dir), functools.cache(folder_names)
    found = (_pair_problem(i, pair, info, is_dir, listed, crop) for i, pair in enumerate(pairs))
    return [p for p in found if p is not None], info


def unique_messages(problems: list[Problem], crop: int = 0) -> list[str]:
    """One line per problem, in order; a group is one line that says how many pairs it affects."""
    counts = Counter(p.group for p in problems if p.group)
    lines, said = [], set()
    for p in problems:
        if p.group is None:
            lines.append(p.message)
        elif p.group not in said:
            said.add(p.group)
            n = f"{counts[p.group]:,} pair{'s' if counts[p.group] > 1 else ''}"
            lines.append(f"{n} smaller than the {crop}x{crop} crop (first: {p.message}); give a smaller "
                         f"{arg('crop_size')}value or larger images" if p.group == "small"
                         else f"{p.message}: {n} affected")
    return lines


def screen_pairs(pairs: list[Pair], crop: int, skip_bad: bool, known: list[str] | None = None, part: str = "",
                 report: Callable[[str], None] | None = None, warned: set[str] | None = None,
                 keep: DecodedImages | None = None, check_hint: bool = True,
                 max_pixels: int | None = MAX_PIXELS) -> list[Pair]:
    """The pairs that can be used: problems (``known`` and found) are one
    :class:`UserError`, or with ``skip_bad`` reported and left out; alpha and animations warned once (``warned``)."""
    found, info = check_pairs_on_disk(pairs, crop, keep, max_pixels)
    problems = list(known or []) + unique_messages(found, crop)
    where = f" in the {part} data" if part else ""
    tell = report or note  # given plain() lines: a log's lines too name arguments as the running script does
    if problems and not skip_bad:
        shown = problems[:20] + (["..."] if len(problems) > 20 else [])
        listing = f"list them all with {flag('check_data')}, " if check_hint else ""
        raise UserError(f"{len(problems)} problem(s){where}, nothing done:\n  " + "\n  ".join(shown)
                        + f"\n(fix them, {listing}or add {flag('skip_bad')} to use the rest)")
    warned = set() if warned is None else warned
    headers = {p: v for p, v in info.items() if isinstance(v, ImageHeader)}
    for key, files, what in (
            ("alpha", [p for p, h in headers.items() if h.alpha],
             "have an alpha channel (first: {}); AHIQ scores their RGB values and ignores alpha"),
            ("animated", [p for p, h in headers.items() if h.frames > 1],
             "are animations (first: {}); AHIQ scores their first frame")):
        if files and key not in warned:
            warned.add(key)
            tell(plain(f"warning: {len(files)} image(s) " + what.format(files[0])))
    for line in problems:
        tell(plain(f"skipped{f' ({part})' if part else ''}: {line}"))
    bad = {p.index for p in found}
    kept = [p for i, p in enumerate(pairs) if i not in bad]
    if not kept:
        raise UserError(f"no usable image pairs{where}")
    return kept


def describe(pairs: list[Pair]) -> str:
    return f"{len(pairs)} pairs from {len(Counter(p.ref_id for p in pairs))} references"
