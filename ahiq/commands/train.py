"""Train AHIQ: ``python train.py --dataset pipal --data_root DATA [options]`` (see ``--help`` and train.sh).

Single process, or ``torchrun --nproc_per_node N train.py ...`` for data-parallel training.
"""
from __future__ import annotations

from ahiq.commands import check_data_and_exit
from ahiq.options.train_options import TrainOptions
from ahiq.utils.errors import cli_main


@cli_main
def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    options = TrainOptions(prog)
    opt = options.parse(argv)
    if options.resumed:
        print(options.resumed)
    from ahiq.data.splits import prepare_splits
    from ahiq.engine.device import setup_run
    from ahiq.engine.trainer import Trainer
    from ahiq.models.checkpoint import open_checkpoint

    cfg = options.config(opt)
    if opt.check_data:  # at the crop training would take: --crop_size, else the checkpoint's, else 224
        parts, _ = prepare_splits(cfg.data, None)
        check_data_and_exit(parts, open_checkpoint(cfg.checkpoint)[1].crop(cfg.crop_size))
    trainer = Trainer(cfg, setup_run(opt.device))
    try:
        return trainer.run()
    finally:
        trainer.close()


if __name__ == "__main__":
    main()
