"""Options of score.py: image pairs in, scores out."""
from __future__ import annotations

import argparse

from ahiq.data.crops import PROTOCOLS, REUSE_NOTE, parse_crops
from ahiq.engine.config import ScoreConfig
from ahiq.models.config import RELEASED_NOTE
from ahiq.options.base_options import BaseOptions, build, scoring_defaults
from ahiq.utils.io import check_name_length


def add_scoring_options(p: argparse.ArgumentParser, crops: str, crops_help: str) -> None:
    """What score.py and test.py share: the checkpoint default, the crop protocol, crop batches, outputs."""
    scoring_defaults(p)
    for action in p._actions:
        if action.dest == "checkpoint":
            action.help = ("AHIQ checkpoint (the authors' release, pyiqa's mirror, or ours); default: the released one "
                           f"({RELEASED_NOTE}); none: random heads (announced)")
    g = p.add_argument_group("scoring")
    g.add_argument("--crops", type=str, default=crops, help=f"crop protocol ({PROTOCOLS}): {crops_help}; {REUSE_NOTE}")
    g.add_argument("--batch_size", type=int, default=16,
                   help="crops per forward pass (memory grows with it, not with the number of pairs)")
    g.add_argument("--save_maps", type=str, default=None,
                   help="folder for one PNG per pair: the image beside its score and weight maps")


def check_scoring(opt: argparse.Namespace) -> None:
    """The scoring options of score.py and test.py, when they are read (output names too long for a file system
    included)."""
    parse_crops(opt.crops)
    for name in ("output", "save_maps", "ntire_zip", "plot"):
        check_name_length(getattr(opt, name, None), f"--{name} ", folder=name == "save_maps")


def score_config(options: BaseOptions, opt: argparse.Namespace, **values) -> ScoreConfig:
    """The :class:`ScoreConfig` of checked options: architecture fields given on the command line override the
    checkpoint's."""
    return build(ScoreConfig, {**vars(opt), "overrides": options.model_overrides(opt), **values})


class ScoreOptions(BaseOptions):
    description = "Score distorted images against their references with AHIQ (higher = better)."
    usage = "%(prog)s --ref REF --dist DIST [--checkpoint FILE] [--output CSV] [options]"
    first_groups = ("score", "scoring")
    examples = """  %(prog)s --ref ref.png --dist dist.png                     the released model (downloaded once)
  %(prog)s --ref refs/ --dist dists/ --crops five --output scores.csv
  %(prog)s --ref refs/ --dist dists/ --checkpoint none --pretrained_backbones false   offline try-out, random weights"""

    def initialize(self, p: argparse.ArgumentParser) -> None:
        super().initialize(p)
        add_scoring_options(p, "center", "the score is the mean over the crops")
        g = p.add_argument_group("score")
        g.add_argument("--ref", type=str, required=True, help="reference image or folder")
        g.add_argument("--dist", type=str, required=True, help="distorted image or folder (paired by file name)")
        g.add_argument("--output", type=str, default=None,
                       help="CSV file (dist,ref,score), written atomically, or - for standard output; a stopped run "
                            "continues from its journal (<output>.journal) when run again with the same settings")
        g.add_argument("--skip_bad", action="store_true", help="score the good pairs and list the bad ones")
        g.add_argument("--quiet", action="store_true", help="no table and no progress bar (the CSV is still written)")

    def check(self, opt: argparse.Namespace) -> None:
        super().check(opt)
        check_scoring(opt)

    def config(self, opt: argparse.Namespace) -> ScoreConfig:
        return score_config(self, opt, progress=not opt.quiet)
