"""Score a dataset split or folder pair against its labels: the task in ``ahiq/commands/test.py`` (``ahiq test``)."""
from ahiq.commands.test import main

if __name__ == "__main__":
    main()
