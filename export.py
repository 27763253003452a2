"""Export a checkpoint for pyiqa or ONNX: the task in ``ahiq/commands/export.py`` (installed: ``ahiq export``)."""
from ahiq.commands.export import main

if __name__ == "__main__":
    main()
