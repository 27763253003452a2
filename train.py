"""Train AHIQ: ``python train.py --dataset pipal --data_root DATA [options]`` (see ``--help`` and train.sh).

Single process, or ``torchrun --nproc_per_node N train.py ...`` for data-parallel training.
"""
from __future__ import annotations

import sys

from data.splits import prepare_splits, run_data_check
from engine.device import setup_run
from engine.trainer import Trainer
from models.checkpoint import open_checkpoint
from options.train_options import TrainOptions
from utils.errors import cli_main


@cli_main
def main(argv=None) -> dict:
    options = TrainOptions()
    opt = options.parse(argv)
    if opt.check_data:
        cfg = options.config(opt)  # the crop training would take: --crop_size, else the checkpoint's, else 224
        parts, _ = prepare_splits(cfg.data, None)
        problems = run_data_check(parts, open_checkpoint(cfg.checkpoint)[1].crop(cfg.crop_size))
        sys.exit(1 if any(problems.values()) else 0)
    trainer = Trainer(options.config(opt), setup_run(opt.device))
    try:
        return trainer.run()
    finally:
        trainer.close()


if __name__ == "__main__":
    main()
