"""Export an AHIQ checkpoint for other runtimes: ``python export.py --checkpoint FILE --to {pyiqa,onnx} --output FILE``.

``pyiqa``: the file ``pyiqa.create_metric("ahiq", pretrained_model_path=...)`` loads; ``onnx``: the scoring graph
``(dist, ref) (B, 3, crop, crop) in [0, 1] -> score (B,)``, checked with onnxruntime when it is installed.
"""
from __future__ import annotations

from ahiq.options.export_options import ExportOptions
from ahiq.utils.errors import cli_main, note


def check_onnx(path: str, model, crop: int) -> str:
    """onnxruntime's scores of the graph at ``path`` against ``model``'s on 3 random crop pairs, as a phrase."""
    import torch

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
def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    opt = ExportOptions(prog).parse(argv)
    from ahiq.models.checkpoint import load_model, open_checkpoint
    from ahiq.models.export import (check_hub_cache, check_onnx_exporter, check_pyiqa_architecture, export_onnx,
                                    pyiqa_checkpoint, pyiqa_metric_options, whole_backbones, write_hub_cache)
    from ahiq.utils.io import atomic_torch_save, check_outputs, check_writable

    check_writable(opt.output, "--output ")
    check_writable(opt.hub_cache, "--hub_cache ", folder=True)
    contents, record = open_checkpoint(opt.checkpoint)
    # every file read so far and the weight files to read: the output lands on none (atomic_write checks again)
    check_outputs({"--output ": opt.output}, [p for p in (opt.vit_weights, opt.cnn_weights) if p])
    if opt.to == "onnx":  # what is missing or refused stops before any backbone is built
        check_onnx_exporter()
    elif record.model_config is not None:
        check_pyiqa_architecture(record.model_config)
    if opt.hub_cache:
        check_hub_cache(opt.hub_cache)
    model = load_model(opt.checkpoint, vit_weights=opt.vit_weights, cnn_weights=opt.cnn_weights,
                       pretrained_backbones=opt.pretrained_backbones, default_seed=opt.seed, contents=contents,
                       device="cpu")
    trained_crop = record.crop()
    if opt.to == "pyiqa":
        if trained_crop != 224:
            note(f"note: {opt.checkpoint} was trained on {trained_crop}-pixel crops; pyiqa scores 224-pixel crops")
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
