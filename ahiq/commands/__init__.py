"""The research tasks behind ``train.py``, ``test.py``, ``score.py``, ``export.py`` and ``ahiq <task>``: each
``main(argv)`` parses its options before torch is imported, makes one call below, and prints."""

TASKS = {
    "score": "score distorted images against their references",
    "test": "score a dataset split or folder pair and report correlations with its labels",
    "train": "train AHIQ (the NTIRE 2022 setting on PIPAL, the standard sets, your own labels.csv)",
    "export": "export a checkpoint for pyiqa or ONNX",
}
