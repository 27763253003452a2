"""The tasks behind ``train.py``, ``test.py``, ``score.py``, ``export.py``, ``ahiq <task>``: each ``main(argv)`` parses
its options before importing the engine (torch), so ``--help`` and typos answer at once; then one call below, a print."""
from __future__ import annotations

import sys
from typing import NoReturn

TASKS = {
    "score": "score distorted images against their references",
    "test": "score a dataset split or folder pair and report correlations with its labels",
    "train": "train AHIQ (the NTIRE 2022 setting on PIPAL, the standard sets, your own labels.csv)",
    "export": "export a checkpoint for pyiqa or ONNX",
}


def check_data_and_exit(parts: dict, crop: int) -> NoReturn:
    """``--check_data`` of train.py and test.py: print :func:`ahiq.data.splits.data_check`'s report, exit 1 on
    problems, else 0."""
    from ahiq.data.splits import data_check

    lines, bad = data_check(parts, crop)
    print("\n".join(lines))
    sys.exit(1 if bad else 0)
