"""Score image pairs with AHIQ: the task in ``ahiq/commands/score.py`` (installed: ``ahiq score``)."""
from ahiq.commands.score import main

if __name__ == "__main__":
    main()
