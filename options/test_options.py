"""Options of test.py: score a dataset split or a folder pair with a trained checkpoint."""
from __future__ import annotations

import argparse

from data.crops import PROTOCOLS, REUSE_NOTE, parse_crops
from options.base_options import BaseOptions, add_run_folder_options, defaults_from_checkpoint, str2bool
from options.train_options import add_data_options, check_data_options
from utils.errors import UserError


def auto_bool(text: str) -> str | bool:
    """``auto`` or a boolean (``true/false/...``)."""
    return "auto" if text.strip().lower() == "auto" else str2bool(text)


class TestOptions(BaseOptions):
    description = "Score every pair of a dataset split or folder pair with an AHIQ checkpoint; write name,score."

    def initialize(self, p: argparse.ArgumentParser) -> None:
        super().initialize(p)
        defaults_from_checkpoint(p)
        add_run_folder_options(p)
        add_data_options(p)
        g = p.add_argument_group("test")
        g.add_argument("--split", type=str, default=None, choices=["train", "val", "test", "all"],
                       help="which part of --dataset to score (default: test if the split has one, else val)")
        g.add_argument("--ref_dir", type=str, default=None, help="reference folder (instead of --dataset)")
        g.add_argument("--dist_dir", type=str, default=None, help="distorted folder, paired with --ref_dir by name")
        g.add_argument("--labels", type=str, default=None, help="labels of --dist_dir (name,score) for metrics")
        g.add_argument("--crops", type=str, default="random:20",
                       help=f"crop protocol ({PROTOCOLS}); default the authors' test: 20 random crops, seed 1919; "
                            f"{REUSE_NOTE}")
        g.add_argument("--flip_tta", type=str2bool, default=False,
                       help="also score the left-right flipped pair and average (test-time augmentation)")
        g.add_argument("--batch_size", type=int, default=4,
                       help="distorted images per forward pass (all their crops); 1 works")
        g.add_argument("--output", type=str, default=None, help="name,score file (default checkpoints/<name>/results.txt)")
        g.add_argument("--ntire_zip", type=str, default=None,
                       help="also write the NTIRE submission zip (output.txt + readme.txt)")
        g.add_argument("--save_maps", type=str, default=None, help="folder for a quality-map PNG per pair")
        g.add_argument("--plot", type=str, default=None, help="PNG of predictions against labels (needs labels)")
        g.add_argument("--denormalize", type=auto_bool, default="auto",
                       help="map predictions back to the training label scale stored in the checkpoint: auto = "
                            "only when the test labels are on that scale (same dataset, labels within the training "
                            "range); otherwise the raw network output is written and RMSE is only reported after "
                            "the fitted logistic mapping")

    def check(self, opt: argparse.Namespace) -> None:
        super().check(opt)
        parse_crops(opt.crops)
        if bool(opt.ref_dir) != bool(opt.dist_dir):
            raise UserError("--ref_dir and --dist_dir go together")
        if opt.ref_dir and (opt.split or opt.check_data):
            raise UserError("--split/--check_data are for --dataset; with --ref_dir/--dist_dir use --labels")
        if opt.labels and not opt.ref_dir:
            raise UserError("--labels is for --ref_dir/--dist_dir")
        if opt.batch_size < 1:
            raise UserError("--batch_size must be >= 1")
        if not opt.ref_dir:
            check_data_options(opt)
