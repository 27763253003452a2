"""Score image pairs with AHIQ: ``python score.py --ref REF --dist DIST [--checkpoint FILE] ...``.

REF and DIST are files or folders. The task lives in ``ahiq/commands/score.py`` (installed: ``ahiq score``).
"""
from ahiq.commands.score import main

if __name__ == "__main__":
    main()
