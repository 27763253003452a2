"""The README's option tables, derived from the declarations: ``python -m ahiq.options.tables README.md`` rewrites
the blocks between ``<!-- options: SCRIPT -->`` and ``<!-- /options -->``; a test checks they are current."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from ahiq.options.base_options import BaseOptions, shown_default
from ahiq.options.export_options import ExportOptions
from ahiq.options.score_options import ScoreOptions
from ahiq.options.test_options import TestOptions
from ahiq.options.train_options import TrainOptions
from ahiq.utils.declare import Declared, number

ORDER = (ScoreOptions, TestOptions, TrainOptions, ExportOptions)  # each table lists what the ones before lack
BLOCK = re.compile(r"(<!-- options: (\w+) -->\n)(.*?)(<!-- /options -->)", re.S)


def valid(d: Declared) -> str:
    if d.flag.valid is not None:
        return d.flag.valid
    if d.flag.choices is not None:
        return ", ".join(f"`{c}`" for c in d.flag.choices)
    if d.flag.low is not None:
        return f"{number(d.flag.low)}..{number(d.flag.high)}"
    return "`true`, `false`" if d.true_false else ""


def table(options: BaseOptions, shown: dict[str, tuple]) -> str:
    """The markdown table of ``options`` that ``shown`` (name -> (flag, help) of earlier tables) lacks."""
    rows = ["| option | default | valid | meaning |", "|---|---|---|---|"]
    for d in options.ordered:
        text = d.flag.text(options.script)
        if shown.get(d.name) == (d.flag, text):
            continue
        shown[d.name] = (d.flag, text)
        default = shown_default(d, options.script)
        default = "required" if options.script in d.flag.required else "off" if d.flag.switch else (
            default if d.flag.shown or default == "none" else f"`{default}`")
        rows.append(f"| `--{d.name}` | {default} | {valid(d)} | {text.replace('|', '/')} |")
    return "\n".join(rows) + "\n"


def tables() -> dict[str, str]:
    """Each script's table (score, test, train, export)."""
    shown: dict[str, tuple] = {}
    return {cls.script: table(cls(), shown) for cls in ORDER}


def rewrite(text: str) -> str:
    found = tables()
    return BLOCK.sub(lambda m: m.group(1) + found[m.group(2)] + m.group(4), text)


if __name__ == "__main__":
    from ahiq.utils.io import atomic_write

    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    text = rewrite(path.read_text())
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
