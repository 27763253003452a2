"""Train AHIQ: ``python train.py --dataset pipal --data_root DATA [options]`` (see ``--help`` and train.sh).

Single process, or ``torchrun --nproc_per_node N train.py ...`` for data-parallel training.
"""
from __future__ import annotations

import sys

import torch.distributed as dist

from options.train_options import TrainOptions
from utils.errors import cli_main
from data.splits import prepare_splits, run_data_check
from engine.device import setup_run
from engine.trainer import Trainer


@cli_main
def main(argv=None) -> dict:
    opt = TrainOptions().parse(argv)
    if opt.check_data:
        parts, _ = prepare_splits(opt, None)
        problems = run_data_check(parts, opt.crop_size, decode=True)
        sys.exit(1 if any(problems.values()) else 0)
    ctx = setup_run(opt.device)
    try:
        trainer = Trainer(opt, ctx)
        try:
            return trainer.run()
        finally:
            trainer.close()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
