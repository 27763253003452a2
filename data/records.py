"""The record every dataset loader returns: one distorted/reference pair and its score."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pair:
    """A labelled (or unlabelled) image pair.

    ``score`` is oriented so that higher = better (what training and metrics use); ``raw`` is the value as
    written in the dataset's label file (DMOS for CSIQ/LIVE, lower = better); both None when unlabelled.
    ``ref_id`` names the reference scene, for reference-disjoint splits.
    """

    dist: Path
    ref: Path
    score: float | None = None
    raw: float | None = None

    @property
    def name(self) -> str:
        return self.dist.name

    @property
    def ref_id(self) -> str:
        return self.ref.stem.lower()
