"""Train AHIQ, in one process or under torchrun: the task in ``ahiq/commands/train.py`` (installed: ``ahiq train``)."""
from ahiq.commands.train import main

if __name__ == "__main__":
    main()
