"""Options of score.py: image pairs in, scores out."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from ahiq.data.crops import parse_crops
from ahiq.engine.config import ScoreConfig
from ahiq.models.config import ModelConfig
from ahiq.options.base_options import BaseOptions, build
from ahiq.utils.declare import option
from ahiq.utils.io import check_name_length

S = {"group": "score", "scripts": ("score",)}


@dataclass(frozen=True)
class ScoreArgs:
    """What score.py reads besides its :class:`ScoreConfig`."""

    ref: str = option(None, "reference image or folder", **S, required=("score",))
    dist: str = option(None, "distorted image or folder (paired by file name)", **S, required=("score",))
    quiet: bool = option(False, "no table and no progress bar (the CSV is still written)", **S, switch=True)


def check_scoring(opt: argparse.Namespace) -> None:
    """The scoring options of score.py and test.py (output names too long for a file system included)."""
    parse_crops(opt.crops)
    for name in ("output", "save_maps", "ntire_zip", "plot"):
        check_name_length(getattr(opt, name, None), f"--{name} ", folder=name == "save_maps")


def score_config(options: BaseOptions, opt: argparse.Namespace, **values) -> ScoreConfig:
    """The :class:`ScoreConfig` of checked options (given architecture fields override the checkpoint's)."""
    return build(ScoreConfig, {**vars(opt), "overrides": options.model_overrides(opt), **values})


class ScoreOptions(BaseOptions):
    script = "score"
    configs = (ScoreArgs, ScoreConfig, ModelConfig)
    description = "Score distorted images against their references with AHIQ (higher = better)."
    usage = "%(prog)s --ref REF --dist DIST [--checkpoint FILE] [--output CSV] [options]"
    first_groups = ("score", "scoring")
    examples = """  %(prog)s --ref ref.png --dist dist.png                     the released model (downloaded once)
  %(prog)s --ref refs/ --dist dists/ --crops five --output scores.csv
  %(prog)s --ref refs/ --dist dists/ --checkpoint none --pretrained_backbones false   offline try-out, random weights"""

    def check(self, opt: argparse.Namespace) -> None:
        super().check(opt)
        check_scoring(opt)

    def config(self, opt: argparse.Namespace) -> ScoreConfig:
        return score_config(self, opt, progress=not opt.quiet)
