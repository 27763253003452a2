"""Options of train.py; defaults reproduce the authors' NTIRE 2022 training (spec §4)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ahiq.data.crops import parse_crops
from ahiq.data.datasets import DataConfig
from ahiq.engine.config import TrainConfig, run_defining
from ahiq.options.base_options import BaseOptions, build, load_options_file, model_config
from ahiq.utils.errors import UserError


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
    script = "train"
    configs = (TrainConfig,)
    description = "Train AHIQ's fusion and head on frozen backbones (defaults: the authors' NTIRE 2022 setting)."
    usage = "%(prog)s --dataset NAME --data_root DIR [--name RUN] [options]"
    first_groups = ("data", "run folder", "training")
    examples = """  %(prog)s --config ntire2022 --data_root PIPAL          the NTIRE 2022 setting (sh train.sh)
  %(prog)s --dataset kadid10k --data_root DATA --check_data              pairs and references per split
  %(prog)s --dataset csv --data_root DIR --name mine --n_epoch 50 --resume"""

    saved: dict | None = None
    resumed: str | None = None  # with --resume: which options the run continues with, for train.py to say

    def earlier(self, chosen: dict) -> dict:
        """With ``--resume``: the run's saved ``opt.json``, under an explicit ``--config`` file and the flags."""
        self.run_options = Path(chosen["checkpoints_dir"]) / chosen["name"] / "opt.json"
        resumed = chosen["resume"] and self.run_options.is_file()
        self.saved = load_options_file(str(self.run_options), self) if resumed else None
        return self.saved or {}

    def check(self, opt: argparse.Namespace) -> None:
        super().check(opt)
        if opt.resume and opt.overwrite:
            raise UserError("--resume continues the run, --overwrite replaces it; give one")
        data_config(opt)
        parse_crops(opt.val_crops)
        if self.saved is None:
            return
        saved = self.saved
        differ = {k for k in saved if _plain(getattr(opt, k)) != _plain(saved[k])}
        changed = sorted(differ & set(run_defining()))
        if changed and not opt.allow_changes:
            shown = ", ".join(f"--{k} {_plain(getattr(opt, k))} (run: {_plain(saved[k])})" for k in changed)
            raise UserError(f"--resume {opt.name}: {shown} would change the run's model or data; drop "
                            f"{'it' if len(changed) == 1 else 'them'} to continue the run as it was, or add "
                            "--allow_changes")
        overridden = sorted(differ & self.given - {"resume", "allow_changes"})
        given = ", ".join(f"--{k} {_plain(getattr(opt, k))}" for k in overridden)
        self.resumed = f"resume: options of {self.run_options}" + (f"; given here: {given}" if given else "")

    def config(self, opt: argparse.Namespace) -> TrainConfig:
        """The :class:`TrainConfig` of checked options."""
        chosen = self.given | self.from_file
        given = tuple(sorted(k for k in model_config(opt).to_dict() if k in chosen or (
            k == "vit" and "patch_size" in chosen)))
        checkpoint = None if str(opt.checkpoint).lower() == "none" else opt.checkpoint  # as for score.py: no heads
        return build(TrainConfig, {**vars(opt), "data": data_config(opt), "model_given": given, "checkpoint": checkpoint})
