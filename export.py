"""Export a checkpoint for pyiqa or ONNX: ``python export.py --checkpoint FILE --to {pyiqa,onnx} --output FILE``.

The task lives in ``ahiq/commands/export.py`` (installed: ``ahiq export``).
"""
from ahiq.commands.export import main

if __name__ == "__main__":
    main()
