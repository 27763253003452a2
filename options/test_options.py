"""Options of test.py: score a dataset split or a folder pair with a trained checkpoint."""
from __future__ import annotations

import argparse
from pathlib import Path

from ahiq.data.datasets import DataConfig
from ahiq.engine.config import ScoreConfig, TestConfig, parse_baselines
from ahiq.models.config import ModelConfig
from ahiq.options.base_options import BaseOptions, build
from ahiq.options.score_options import check_scoring, score_config
from ahiq.options.train_options import data_config
from ahiq.utils.errors import UserError


class TestOptions(BaseOptions):
    script = "test"
    configs = (TestConfig, DataConfig, ModelConfig)
    description = "Score every pair of a dataset split or folder pair with an AHIQ checkpoint; write name,score."
    usage = "%(prog)s (--ref_dir REF --dist_dir DIST | --dataset NAME --data_root DIR) [options]"
    first_groups = ("test", "scoring", "data", "run folder")
    examples = """  %(prog)s --ref_dir REF --dist_dir DIST --ntire_zip submission.zip   the NTIRE folders (sh test.sh)
  %(prog)s --dataset kadid10k --data_root DATA --split all --plot kadid.png   a whole labelled set
  %(prog)s --name mine --dataset csv --data_root DIR --split test            a trained run's best.pth"""

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

    def config(self, opt: argparse.Namespace) -> TestConfig:
        """The :class:`TestConfig` of checked options: the scoring run inside it writes beside the checkpoint."""
        run = Path(opt.checkpoints_dir) / opt.name
        named = "name" in self.given | self.from_file
        checkpoint = opt.checkpoint
        if checkpoint is None and named:
            checkpoint = str(run / "best.pth")  # a named run's own; without a name, the released checkpoint
        output = opt.output or str(default_output(checkpoint, run, named))
        score: ScoreConfig = score_config(self, opt, checkpoint=checkpoint, output=output)
        return build(TestConfig, {**vars(opt), "score": score, "data": None if opt.ref_dir else data_config(opt)})


def default_output(checkpoint: str | None, run: Path, named: bool) -> Path:
    """Where results go without ``--output``: beside the checkpoint (a run's ``best.pth``: its ``results.txt``)."""
    if checkpoint is None:
        return run / "results.txt"
    if checkpoint.lower() == "none":
        return run / "results.txt" if named else Path("results.txt")
    path = Path(checkpoint)
    in_run = path.name == "best.pth" and (path.parent / "opt.json").is_file()
    return path.parent / ("results.txt" if in_run or (named and path == run / "best.pth") else f"{path.stem}_results.txt")
