"""Score a dataset split or a folder pair with a trained checkpoint and report SRCC/PLCC against its labels.

``python test.py --help``; ``sh test.sh`` for the NTIRE 2022 PIPAL folders. The task lives in
``ahiq/commands/test.py`` (installed: ``ahiq test``).
"""
from ahiq.commands.test import main

if __name__ == "__main__":
    main()
