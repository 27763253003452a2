"""Options of test.py: score a dataset split or a folder pair with a trained checkpoint."""
from __future__ import annotations

import argparse
from pathlib import Path

from ahiq.engine.config import BASELINE_NAMES, ScoreConfig, parse_baselines
from ahiq.models.config import RELEASED_NOTE
from ahiq.options.base_options import BaseOptions, add_bool, add_run_folder_options, str2bool
from ahiq.options.score_options import add_scoring_options, check_scoring, score_config
from ahiq.options.train_options import add_data_options, data_config
from ahiq.utils.errors import UserError


def auto_bool(text: str) -> str | bool:
    """``auto`` or a boolean (``true/false/...``)."""
    return "auto" if text.strip().lower() == "auto" else str2bool(text)


class TestOptions(BaseOptions):
    description = "Score every pair of a dataset split or folder pair with an AHIQ checkpoint; write name,score."
    usage = "%(prog)s (--ref_dir REF --dist_dir DIST | --dataset NAME --data_root DIR) [options]"
    first_groups = ("test", "scoring", "data", "run folder")
    examples = """  %(prog)s --ref_dir REF --dist_dir DIST --ntire_zip submission.zip   the NTIRE folders (sh test.sh)
  %(prog)s --dataset kadid10k --data_root DATA --split all --plot kadid.png   a whole labelled set
  %(prog)s --name mine --dataset csv --data_root DIR --split test            a trained run's best.pth"""

    def initialize(self, p: argparse.ArgumentParser) -> None:
        super().initialize(p)
        add_scoring_options(p, "random:20", "the authors' test is 20 random crops, seed 1919")
        for action in p._actions:
            if action.dest == "checkpoint":
                action.help = ("AHIQ checkpoint; default: <checkpoints_dir>/<name>/best.pth when --name is given, else "
                               f"the released one ({RELEASED_NOTE}); none: random heads")
        add_run_folder_options(p)
        add_data_options(p)
        g = p.add_argument_group("test")
        g.add_argument("--split", type=str, default=None, choices=["train", "val", "test", "all"],
                       help="which part of --dataset to score (default: test if the split has one, else val)")
        g.add_argument("--ref_dir", type=str, default=None, help="reference folder (instead of --dataset)")
        g.add_argument("--dist_dir", type=str, default=None, help="distorted folder, paired with --ref_dir by name")
        g.add_argument("--labels", type=str, default=None, help="labels of --dist_dir (name,score) for metrics")
        add_bool(g, "--flip_tta", False, "also score the left-right flipped pair and average (test-time augmentation)")
        g.add_argument("--output", type=str, default=None,
                       help="name,score file (default: beside the checkpoint: its run folder's results.txt for a "
                            "run's best.pth, else <checkpoint stem>_results.txt next to the file; the released one: "
                            "checkpoints/<name>/results.txt; --checkpoint none: ./results.txt); a stopped run "
                            "continues from its journal (<output>.journal) when run again with the same settings")
        g.add_argument("--ntire_zip", type=str, default=None,
                       help="also write the NTIRE submission zip (output.txt + readme.txt)")
        g.add_argument("--plot", type=str, default=None, help="PNG of predictions against labels (needs labels)")
        g.add_argument("--baselines", type=str, default=None,
                       help=f"also score the same pairs with classical metrics (piq): {', '.join(BASELINE_NAMES)}, all, or "
                            "none; prints and writes <output>_baselines.csv (per pair), _comparison.md/.csv, "
                            "_types.csv (SRCC per distortion type), _scatter.png, _types.png (needs labels)")
        g.add_argument("--type_min_pairs", type=int, default=5,
                       help="the fewest pairs of a distortion type that get a correlation in the per-type tables of "
                            "--baselines (a type with fewer shows its count and n/a)")
        g.add_argument("--denormalize", type=auto_bool, default="auto",
                       help="map predictions back to the training label scale stored in the checkpoint: auto = "
                            "only when the test labels are on that scale (same dataset, labels within the training "
                            "range); otherwise the raw network output is written and RMSE is only reported after "
                            "the fitted logistic mapping")

    def check(self, opt: argparse.Namespace) -> None:
        super().check(opt)
        check_scoring(opt)
        if bool(opt.ref_dir) != bool(opt.dist_dir):
            raise UserError("--ref_dir and --dist_dir go together")
        if opt.ref_dir and (opt.split or opt.check_data):
            raise UserError("--split/--check_data are for --dataset; with --ref_dir/--dist_dir use --labels")
        if opt.labels and not opt.ref_dir:
            raise UserError("--labels is for --ref_dir/--dist_dir")
        if not opt.ref_dir:
            data_config(opt)
        if opt.baselines is not None:
            parse_baselines(opt.baselines)
        if not 1 <= opt.type_min_pairs <= 10**6:
            raise UserError(f"--type_min_pairs {opt.type_min_pairs}: give 1..1000000")

    def config(self, opt: argparse.Namespace) -> ScoreConfig:
        run = Path(opt.checkpoints_dir) / opt.name
        checkpoint = opt.checkpoint
        if checkpoint is None and "name" in self.given | self.from_file:
            checkpoint = str(run / "best.pth")  # a named run's own; without a name, the released checkpoint
        output = opt.output or str(default_output(checkpoint, run, "name" in self.given | self.from_file))
        return score_config(self, opt, checkpoint=checkpoint, output=output)


def default_output(checkpoint: str | None, run: Path, named: bool) -> Path:
    """Where results go without ``--output``: beside the checkpoint they come from. A run's ``best.pth``: the run
    folder's ``results.txt``; another file: ``<its stem>_results.txt`` next to it; the released checkpoint (None):
    its folder ``checkpoints/<name>/results.txt``; random heads (``none``): the named run's folder, else
    ``./results.txt``."""
    if checkpoint is None:
        return run / "results.txt"
    if checkpoint.lower() == "none":
        return run / "results.txt" if named else Path("results.txt")
    path = Path(checkpoint)
    in_run = path.name == "best.pth" and (path.parent / "opt.json").is_file()
    return path.parent / ("results.txt" if in_run or (named and path == run / "best.pth") else f"{path.stem}_results.txt")
