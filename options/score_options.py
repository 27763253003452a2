"""Options of score.py: image pairs in, scores out."""
from __future__ import annotations

import argparse

from data.crops import PROTOCOLS, REUSE_NOTE, parse_crops
from options.base_options import BaseOptions, defaults_from_checkpoint
from utils.errors import UserError


class ScoreOptions(BaseOptions):
    description = "Score distorted images against their references with AHIQ (higher = better)."

    def initialize(self, p: argparse.ArgumentParser) -> None:
        super().initialize(p)
        defaults_from_checkpoint(p)
        g = p.add_argument_group("score")
        g.add_argument("--ref", type=str, required=True, help="reference image or folder")
        g.add_argument("--dist", type=str, required=True, help="distorted image or folder (paired by file name)")
        g.add_argument("--crops", type=str, default="center",
                       help=f"crop protocol: {PROTOCOLS}; the score is the mean over crops; {REUSE_NOTE}")
        g.add_argument("--batch_size", type=int, default=4, help="distorted images per forward pass (all their crops)")
        g.add_argument("--output", type=str, default=None, help="CSV file (dist,ref,score), written atomically")
        g.add_argument("--save_maps", type=str, default=None,
                       help="folder for one PNG per pair: the image beside its score and weight maps")
        g.add_argument("--skip_bad", action="store_true", help="score the good pairs and list the bad ones")
        g.add_argument("--quiet", action="store_true", help="no table on stdout (the CSV is still written)")

    def check(self, opt: argparse.Namespace) -> None:
        super().check(opt)
        parse_crops(opt.crops)
        if opt.batch_size < 1:
            raise UserError("--batch_size must be >= 1")
