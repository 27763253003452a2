"""Options of export.py (``ahiq export``): a checkpoint in, a pyiqa checkpoint or an ONNX graph out."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ahiq.engine.config import Common
from ahiq.options.base_options import BaseOptions
from ahiq.utils.declare import option
from ahiq.utils.errors import UserError

E = {"group": "export", "scripts": ("export",)}


@dataclass(frozen=True)
class ExportArgs:
    """What export.py reads besides the weights' options it shares with the other scripts."""

    to: str = option(None, "pyiqa checkpoint or ONNX scoring graph", **E, choices=("pyiqa", "onnx"), required=("export",))
    output: str = option(None, "file to write (atomically); never the --checkpoint file", **E, required=("export",))
    hub_cache: str | None = option(None, "pyiqa: also write this folder as a hub cache of the backbones, for "
                                   "HF_HUB_CACHE=DIR HF_HUB_OFFLINE=1 (a folder of its own, not your hub cache)", **E)
    check: bool = option(True, "ONNX: compare onnxruntime with PyTorch (if installed)", **E)


class ExportOptions(BaseOptions):
    script = "export"
    configs = (ExportArgs, Common)
    description = "Export an AHIQ checkpoint for other runtimes."
    first_groups = ("export",)
    examples = """  %(prog)s --checkpoint ahiq.pth --to onnx --output ahiq.onnx    the scoring graph, checked by onnxruntime
  %(prog)s --checkpoint ahiq.pth --to pyiqa --output ahiq_pyiqa.pth   a file pyiqa.create_metric("ahiq") loads"""

    def check(self, opt: argparse.Namespace) -> None:
        super().check(opt)
        if Path(opt.output).resolve() == Path(opt.checkpoint).resolve():
            raise UserError(f"--output {opt.output}: is the --checkpoint file; give another file name")
        if opt.to == "pyiqa" and opt.crop_size not in (None, 224):
            raise UserError(f"--crop_size {opt.crop_size}: pyiqa's AHIQ scores 224x224 crops only; drop the option")
        if opt.hub_cache and opt.to != "pyiqa":
            raise UserError("--hub_cache is for --to pyiqa; drop it")
