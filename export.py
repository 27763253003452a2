"""Export an AHIQ checkpoint for other runtimes.

    python export.py --checkpoint FILE --to pyiqa --output ahiq_pyiqa.pth [--hub_cache DIR]
    python export.py --checkpoint FILE --to onnx --output ahiq.onnx [--crop_size 224]

``pyiqa``: the file ``pyiqa.create_metric("ahiq", pretrained_model_path=...)`` loads (whole backbones, fusion and
head under ``params``); the create_metric line with the normalisation that gives our scores is printed.
``--hub_cache DIR`` also writes the backbones as a Hugging Face hub cache, for pyiqa without a network.
``onnx``: the scoring graph ``(dist, ref) (B, 3, crop, crop) in [0, 1] -> score (B,)`` for any batch B, checked
against PyTorch with onnxruntime when it is installed; ``examples/score_onnx.py`` scores images with it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from models.checkpoint import load_model, open_checkpoint
from models.export import (check_hub_cache, check_onnx_exporter, check_pyiqa_architecture, export_onnx, pyiqa_checkpoint,
                           pyiqa_metric_options, whole_backbones, write_hub_cache)
from options.base_options import OneDefaultHelpFormatter, OneLineErrors, check_range, str2bool
from utils.errors import UserError, cli_main
from utils.io import atomic_torch_save, check_writable


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineErrors(description=__doc__.split("\n\n")[0], formatter_class=OneDefaultHelpFormatter, allow_abbrev=False)
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


def check_onnx(path: str, model, crop: int) -> str:
    """onnxruntime's scores of the graph at ``path`` against ``model``'s on 3 random crop pairs (a batch other
    than the export's), as a phrase."""
    try:
        import onnxruntime
    except ImportError:
        return "not run (pip install onnxruntime to check it)"
    gen = torch.Generator().manual_seed(1)
    dist, ref = (torch.rand(3, 3, crop, crop, generator=gen) for _ in range(2))
    with torch.no_grad():
        ours = model(dist, ref)
    try:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own error types
        if "DeformConv" not in str(err):
            raise
        return f"not run: onnxruntime {onnxruntime.__version__} has no DeformConv (pip install 'onnxruntime>=1.25')"
    theirs = session.run(None, {"dist": dist.numpy(), "ref": ref.numpy()})[0]
    return f"max |onnxruntime - PyTorch| = {abs(theirs - ours.numpy()).max():.1e} on 3 random crop pairs"


@cli_main
def main(argv: list[str] | None = None) -> None:
    opt = parse(argv)
    check_writable(opt.output, "--output ")
    check_writable(opt.hub_cache, "--hub_cache ", folder=True)
    contents, record = open_checkpoint(opt.checkpoint)
    if opt.to == "onnx":  # what is missing or refused stops before any backbone is built
        check_onnx_exporter()
    elif record.model_config is not None:
        check_pyiqa_architecture(record.model_config)
    if opt.hub_cache:
        check_hub_cache(opt.hub_cache)
    model = load_model(opt.checkpoint, vit_weights=opt.vit_weights, cnn_weights=opt.cnn_weights,
                       pretrained_backbones=opt.pretrained_backbones, default_seed=opt.seed, contents=contents)
    trained_crop = record.crop()
    if opt.to == "pyiqa":
        if trained_crop != 224:
            print(f"note: {opt.checkpoint} was trained on {trained_crop}-pixel crops; pyiqa scores 224-pixel crops",
                  file=sys.stderr)
        whole = whole_backbones(model)
        atomic_torch_save(pyiqa_checkpoint(model, whole), opt.output)
        kwargs = ", ".join(f"{k}={v}" for k, v in pyiqa_metric_options(model.config).items())
        print(f"wrote {opt.output}: pyiqa 'params' (whole ViT-B/8 and ResNet-50, fusion, head); score with\n"
              f"  pyiqa.create_metric(\"ahiq\", pretrained_model_path=\"{opt.output}\", {kwargs})")
        if opt.hub_cache:
            repos = write_hub_cache(opt.hub_cache, whole)
            print(f"wrote {opt.hub_cache}: {' and '.join(repos)} (what pyiqa's timm.create_model asks for; the "
                  f"file's tensors replace them); offline: HF_HUB_CACHE={opt.hub_cache} HF_HUB_OFFLINE=1")
        return
    crop = opt.crop_size or trained_crop
    export_onnx(model, opt.output, crop)
    print(f"wrote {opt.output}: (dist, ref) (B, 3, {crop}, {crop}) float32 RGB in [0, 1] -> score (B,); "
          + (f"check: {check_onnx(opt.output, model, crop)}" if opt.check else "not checked"))


if __name__ == "__main__":
    main()
