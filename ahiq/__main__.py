"""``ahiq TASK [options]`` (also ``python -m ahiq``): the research scripts as one command."""
from __future__ import annotations

import importlib
import sys

from ahiq import __version__
from ahiq.commands import TASKS

USAGE = "usage: ahiq {" + ",".join(TASKS) + "} [options]   (ahiq TASK --help: the options of one task)"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        lines = [f"AHIQ {__version__}: full-reference image quality (CVPRW 2022).", "", USAGE, "", "tasks:"]
        lines += [f"  {task:<8} {text}" for task, text in TASKS.items()]
        lines += ["", "In Python: import ahiq; ahiq.score('dist.png', 'ref.png')"]
        print("\n".join(lines), file=sys.stdout if argv else sys.stderr)
        sys.exit(0 if argv else 2)
    if argv[0] in ("-V", "--version"):
        print(f"ahiq {__version__}")
        return
    task, rest = argv[0], argv[1:]
    if task not in TASKS:
        print(f"error: unknown task {task!r}; choose one of {', '.join(TASKS)} (see ahiq --help)", file=sys.stderr)
        sys.exit(2)
    importlib.import_module(f"ahiq.commands.{task}").main(rest, prog=f"ahiq {task}")


if __name__ == "__main__":
    main()
