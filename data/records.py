"""The record every dataset loader returns: one distorted/reference pair and its score."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

SPLITS = ("train", "val", "test")  # the parts of a split, and the values of labels.csv's split column


@dataclass(frozen=True)
class Pair:
    """A labelled (or unlabelled) image pair: ``score`` higher = better, ``raw`` as the label file writes it (None when
    unlabelled); ``labels.csv`` pairs keep their paths as written (``listed``, ``listed_ref``) and their ``split``."""

    dist: Path
    ref: Path
    score: float | None = None
    raw: float | None = None
    listed: str | None = None
    listed_ref: str | None = None
    split: str | None = None
    type: str | None = None  # the distortion type a label file names (labels.csv's type column)

    @property
    def name(self) -> str:
        return self.listed or self.dist.name

    @property
    def ref_id(self) -> str:
        return self.listed_ref or self.ref.stem.lower()


def result_names(items: Sequence[Pair | Path]) -> list[str]:
    """Names that tell the results of ``items`` apart: bare names when unique (NTIRE ``output.txt``), else paths relative
    to the distorted files' deepest shared folder (LIVE's ``jpeg/img1.bmp``)."""
    names = [p.name if isinstance(p, Pair) else Path(p).name for p in items]
    if len(set(names)) == len(names):
        return names
    dists = [p.dist if isinstance(p, Pair) else Path(p) for p in items]
    root = os.path.commonpath([str(d.parent) for d in dists])
    return [Path(os.path.relpath(d, root)).as_posix() for d in dists]
