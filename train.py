"""Train AHIQ: ``python train.py --dataset pipal --data_root DATA [options]`` (``--help``; ``sh train.sh``).

One process, or ``torchrun --nproc_per_node N train.py ...``. The task lives in ``ahiq/commands/train.py``
(installed: ``ahiq train``).
"""
from ahiq.commands.train import main

if __name__ == "__main__":
    main()
