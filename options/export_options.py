"""Options of export.py (``ahiq export``): a checkpoint in, a pyiqa checkpoint or an ONNX graph out."""
from __future__ import annotations

import argparse
from pathlib import Path

from ahiq.options.base_options import OneDefaultHelpFormatter, OneLineErrors, check_range, str2bool
from ahiq.utils.errors import UserError

DESCRIPTION = 'Export an AHIQ checkpoint for other runtimes.'
EXAMPLES = """examples:
  %(prog)s --checkpoint ahiq.pth --to onnx --output ahiq.onnx       the scoring graph, checked with onnxruntime
  %(prog)s --checkpoint ahiq.pth --to pyiqa --output ahiq_pyiqa.pth  a file pyiqa.create_metric("ahiq") loads"""


def parse_export(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    """The checked options of export.py / ``ahiq export``."""
    p = OneLineErrors(prog=prog, description=DESCRIPTION, epilog=EXAMPLES, formatter_class=OneDefaultHelpFormatter,
                      allow_abbrev=False)
    p.add_argument("--checkpoint", metavar="FILE", required=True,
                   help="AHIQ checkpoint: the authors' release, pyiqa's mirror or ours")
    p.add_argument("--to", required=True, choices=["pyiqa", "onnx"], help="pyiqa checkpoint or ONNX scoring graph")
    p.add_argument("--output", metavar="FILE", required=True, help="file to write (atomically); never the --checkpoint file")
    p.add_argument("--crop_size", metavar="N", type=int, default=None,
                   help="ONNX crop size, a multiple of 32 (default: the checkpoint's training crop, else 224; pyiqa: 224)")
    p.add_argument("--hub_cache", metavar="DIR", default=None,
                   help="pyiqa: also write this folder as a hub cache of the backbones, for HF_HUB_CACHE=DIR "
                        "HF_HUB_OFFLINE=1 (a folder of its own, not your hub cache)")
    p.add_argument("--check", metavar="BOOL", type=str2bool, default=True,
                   help="ONNX: compare onnxruntime with PyTorch (if installed)")
    p.add_argument("--pretrained_backbones", metavar="BOOL", type=str2bool, default=None,
                   help="true: backbones by timm tag; false: random (default: the backbones the checkpoint records, "
                        "else true)")
    p.add_argument("--vit_weights", metavar="FILE", default=None, help="local ViT weights (.npz/.safetensors/.pth/.bin)")
    p.add_argument("--cnn_weights", metavar="FILE", default=None, help="local ResNet weights (.safetensors/.pth/.bin)")
    p.add_argument("--seed", metavar="N", type=int, default=1919,
                   help="seed of random backbones the checkpoint does not record")
    opt = p.parse_args(argv)
    check_range("seed", opt.seed)
    if Path(opt.output).resolve() == Path(opt.checkpoint).resolve():
        raise UserError(f"--output {opt.output}: is the --checkpoint file; give another file name")
    if opt.crop_size is not None and (opt.crop_size <= 0 or opt.crop_size % 32):
        raise UserError(f"--crop_size {opt.crop_size}: must be a positive multiple of 32")
    if opt.to == "pyiqa" and opt.crop_size not in (None, 224):
        raise UserError(f"--crop_size {opt.crop_size}: pyiqa's AHIQ scores 224x224 crops only; drop the option")
    if opt.hub_cache and opt.to != "pyiqa":
        raise UserError("--hub_cache is for --to pyiqa; drop it")
    return opt
