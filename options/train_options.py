"""Options of train.py; defaults reproduce the authors' NTIRE 2022 training (spec §4)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ahiq.data.crops import REUSE_NOTE, parse_crops
from ahiq.data.datasets import DATASETS, SPLIT_BY, DataConfig
from ahiq.data.crops import CROP_RULES
from ahiq.engine.config import BEST_RULES, TrainConfig, run_defining
from ahiq.options.base_options import (BaseOptions, add_bool, add_run_folder_options, build, load_options_file,
                                  model_config, scoring_defaults)
from ahiq.utils.errors import UserError


def add_data_options(p: argparse.ArgumentParser) -> None:
    """Dataset and split options shared by train.py and test.py."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", type=str, default="pipal", choices=list(DATASETS),
                   help="dataset in its distributed layout under --data_root (synthetic: generated there; csv: "
                        "your own pairs listed in DATA_ROOT/labels.csv, header dist,ref,score[,split])")
    g.add_argument("--lower_better", action="store_true",
                   help="csv: the scores are DMOS-like (lower = better); training and metrics use them negated, "
                        "the raw values are kept beside the predictions in <output>_labels.csv")
    g.add_argument("--data_root", type=str, default=None,
                   help="folder of the dataset (default ./datasets/<its name>: ./datasets/PIPAL, ./datasets/synthetic, "
                        "./datasets/kadid10k ...)")
    g.add_argument("--train_list", type=str, default=None,
                   help="PIPAL: one label list file (name,score) instead of Train_Label/*.txt")
    g.add_argument("--val_list", type=str, default=None,
                   help="validation labels (name,score); replaces the held-out split. Needs --val_ref_dir/--val_dis_dir")
    g.add_argument("--val_ref_dir", type=str, default=None, help="reference folder of --val_list")
    g.add_argument("--val_dis_dir", type=str, default=None, help="distorted folder of --val_list")
    g.add_argument("--split_ratio", type=str, default=None,
                   help="reference-disjoint train:val[:test] split, e.g. 9:1 or 6:2:2 "
                        "(default 9:1 for pipal, 3:1 for synthetic, 6:2:2 for the standard sets)")
    g.add_argument("--split_seed", type=int, default=0, help="seed of the reference-disjoint split")
    g.add_argument("--split_file", type=str, default=None, help="reuse a split.json written by an earlier run")
    g.add_argument("--split_by", type=str, default="reference", choices=list(SPLIT_BY),
                   help="what the random split shuffles into train/val/test: whole references (the protocol), or "
                        "single pairs (for a set of too few references to split, e.g. a one-reference sample; its "
                        "parts then share references and every table says so)")
    g.add_argument("--synthetic_refs", type=int, default=12, help="synthetic: number of reference images")
    g.add_argument("--synthetic_size", type=int, default=128, help="synthetic: image side in pixels")
    g.add_argument("--check_data", action="store_true",
                   help="only scan the data (labels parse, images exist and decode, sizes) and exit 1 on problems")
    g.add_argument("--skip_bad", action="store_true", help="leave out pairs with bad images (listed) instead of stopping")


def data_config(opt: argparse.Namespace) -> DataConfig:
    """The :class:`DataConfig` of the options (its rules are checked as it is built)."""
    cfg = build(DataConfig, vars(opt))
    if cfg.split_ratio is not None:
        from ahiq.data.splits import parse_ratio

        if parse_ratio(cfg.split_ratio)[1] == 0 and not cfg.val_list:  # training and validation both non-empty
            raise UserError(f"--split_ratio {cfg.split_ratio}: the validation part is 0; give it a share (e.g. 9:1 or "
                            "6:2:2), or give --val_list with --val_ref_dir/--val_dis_dir")
    if cfg.dataset == "synthetic" and cfg.synthetic_size < (opt.crop_size or 0):
        raise UserError(f"synthetic: need --synthetic_size >= --crop_size ({opt.crop_size})")
    return cfg


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


class TrainOptions(BaseOptions):
    description = "Train AHIQ's fusion and head on frozen backbones (defaults: the authors' NTIRE 2022 setting)."
    usage = "%(prog)s --dataset NAME --data_root DIR [--name RUN] [options]"
    first_groups = ("data", "run folder", "training")
    examples = """  %(prog)s --config ntire2022 --data_root PIPAL          the NTIRE 2022 setting (sh train.sh)
  %(prog)s --dataset kadid10k --data_root DATA --check_data              pairs and references per split
  %(prog)s --dataset csv --data_root DIR --name mine --n_epoch 50 --resume"""

    def initialize(self, p: argparse.ArgumentParser) -> None:
        super().initialize(p)
        scoring_defaults(p)  # with --checkpoint: its crop size and backbones unless given
        add_run_folder_options(p)
        add_data_options(p)
        g = p.add_argument_group("training")
        g.add_argument("--n_epoch", type=int, default=200, help="total epochs")
        g.add_argument("--batch_size", type=int, default=4, help="pairs per step (per process under torchrun)")
        g.add_argument("--learning_rate", type=float, default=1e-4, help="Adam learning rate of both groups")
        g.add_argument("--feature_lr_scale", type=float, default=1.0,
                       help="learning-rate factor for the weights of the three layers that read the backbone "
                            "features (regressor.down_channel, deform_net.conv_offset, deform_net.deform); "
                            "1 = the authors' two groups; the demo's short schedule uses 0.3")
        g.add_argument("--weight_decay", type=float, default=1e-5, help="Adam weight decay")
        g.add_argument("--T_max", type=int, default=50,
                       help="cosine annealing period in iterations (stepped per step); 0: one half period over "
                            "the whole run (n_epoch x steps per epoch), ending at --eta_min")
        g.add_argument("--eta_min", type=float, default=0.0, help="cosine annealing minimum learning rate")
        g.add_argument("--flip", type=str, default="horizontal", choices=["horizontal", "vertical", "none"],
                       help="random flip; vertical replicates the authors' accidental up-down flip")
        g.add_argument("--train_crop_rule", type=str, default="full", choices=CROP_RULES,
                       help="training crop positions: full = every position; authors = the release's "
                            "randint(0, H - crop), which never reaches the last row and column")
        g.add_argument("--score_norm", type=str, default="fit", choices=["fit", "per_split", "none"],
                       help="fit: min-max fitted on training scores, stored in the checkpoint and used for "
                            "val/test; per_split: the authors' min-max within each split; none: raw scores")
        add_bool(g, "--strict_fp32", False,
                 "fp32 training on GPUs without TF32 (slower); false: PyTorch's own TF32 settings")
        g.add_argument("--grad_clip", type=float, default=0.0,
                       help="clip the gradient norm of the trained parameters to this value (0: off, the authors')")
        g.add_argument("--val_freq", type=int, default=1, help="validate every N epochs")
        g.add_argument("--val_crops", type=str, default="five",
                       help=f"crop protocol of validation (authors: five); {REUSE_NOTE}")
        add_bool(g, "--val_drop_last", False, "true replays the release's drop_last=True: validation leaves out the "
                 "last partial batch of --batch_size pairs; false scores every pair")
        g.add_argument("--best_rule", type=str, default="sum", choices=BEST_RULES,
                       help="when best.pth is written: sum = SRCC + PLCC improved; either = the release's "
                            "SRCC or PLCC improved (both bests then move to the new epoch's values)")
        g.add_argument("--resume", action="store_true",
                       help="continue checkpoints/<name>/last.pth (weights, optimiser, scheduler, epoch, RNG) with the "
                            "run's own options (checkpoints/<name>/opt.json); options given here override them")
        g.add_argument("--overwrite", action="store_true",
                       help="replace the run already in checkpoints/<name>/ (its checkpoints, options, split, log and "
                            "TensorBoard scalars); without it, a folder that holds a run is refused unless --resume")
        g.add_argument("--allow_changes", action="store_true",
                       help="with --resume: accept options that change the run's model or data (crop, architecture, "
                            "backbones, dataset, split), which are refused otherwise")
        g.add_argument("--max_steps", type=int, default=0, help="stop each epoch after N steps (0: full epoch)")
        g.add_argument("--time_limit", type=float, default=0,
                       help="stop training after this many seconds: at an epoch's end when another epoch would not "
                            "fit (save last.pth; validation as --val_freq says), else inside the epoch with the "
                            "position saved in last.pth (--resume continues it exactly); 0: no limit")
        add_bool(g, "--progress", True, "tqdm progress bar by steps (the log gets one line per epoch either way)")
        add_bool(g, "--validate_first", False, "validate once before the first step (logged as epoch 0; the "
                 "starting point of a fine-tuning run from --checkpoint)")

    def parse(self, argv: list[str] | None = None) -> argparse.Namespace:
        """As :meth:`BaseOptions.parse`; with ``--resume`` the run's saved ``opt.json`` gives the defaults."""
        argv = sys.argv[1:] if argv is None else argv
        pre, _ = self.parser.parse_known_args(argv)
        run_options = Path(pre.checkpoints_dir) / pre.name / "opt.json"
        saved = load_options_file(str(run_options), self.parser) if pre.resume and run_options.is_file() else None
        if saved is not None:
            self.parser.set_defaults(**saved)  # an explicit --config file still comes on top
        opt = super().parse(argv)
        if saved is None:
            return opt
        changed = sorted(k for k in run_defining() if k in saved and _plain(getattr(opt, k)) != _plain(saved[k]))
        if changed and not opt.allow_changes:
            shown = ", ".join(f"--{k} {_plain(getattr(opt, k))} (run: {_plain(saved[k])})" for k in changed)
            raise UserError(f"--resume {opt.name}: {shown} would change the run's model or data; drop "
                            f"{'it' if len(changed) == 1 else 'them'} to continue the run as it was, or add "
                            "--allow_changes")
        overridden = [k for k in sorted(self.given - {"resume", "allow_changes"})
                      if k in saved and _plain(getattr(opt, k)) != _plain(saved[k])]
        given = ", ".join(f"--{k} {_plain(getattr(opt, k))}" for k in overridden)
        print(f"resume: options of {run_options}" + (f"; given here: {given}" if given else ""))  # not an error
        return opt

    def check(self, opt: argparse.Namespace) -> None:
        super().check(opt)
        if opt.resume and opt.overwrite:
            raise UserError("--resume continues the run, --overwrite replaces it; give one")
        data_config(opt)
        parse_crops(opt.val_crops)

    def config(self, opt: argparse.Namespace) -> TrainConfig:
        """The :class:`TrainConfig` of checked options."""
        chosen = self.given | self.from_file
        given = tuple(sorted(k for k in model_config(opt).to_dict() if k in chosen or (
            k == "vit" and "patch_size" in chosen)))
        checkpoint = None if str(opt.checkpoint).lower() == "none" else opt.checkpoint  # as for score.py: no heads
        return build(TrainConfig, {**vars(opt), "data": data_config(opt), "model_given": given, "checkpoint": checkpoint})
