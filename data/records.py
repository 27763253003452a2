"""The record every dataset loader returns: one distorted/reference pair and its score."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pair:
    """A labelled (or unlabelled) image pair.

    ``score`` is oriented so that higher = better (what training and metrics use); ``raw`` is the value as
    written in the dataset's label file (DMOS for CSIQ/LIVE, lower = better); both None when unlabelled.
    ``ref_id`` names the reference scene, for reference-disjoint splits. Pairs listed by path in a label
    file (``labels.csv``) keep those paths as ``listed`` / ``listed_ref``: they name results and maps and tell
    references apart, and ``split`` holds the file's own train/val/test assignment when it has one.
    """

    dist: Path
    ref: Path
    score: float | None = None
    raw: float | None = None
    listed: str | None = None
    listed_ref: str | None = None
    split: str | None = None

    @property
    def name(self) -> str:
        return self.listed or self.dist.name

    @property
    def ref_id(self) -> str:
        return self.listed_ref or self.ref.stem.lower()
