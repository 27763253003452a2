"""An AHIQ model for other runtimes: pyiqa's checkpoint (the authors' network with whole timm backbones, one state dict
under ``params``), and an ONNX graph ``(dist, ref) -> score`` for one crop size and any batch."""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from ahiq.models.ahiq import AHIQ, NORMALISATIONS, DeformFusion, ModelConfig
from ahiq.models.backbones import ResNetFeatures
from ahiq.models.checkpoint import META_KEY, checkpoint_dict
from ahiq.models.config import IMPLEMENTATION_ONLY, check_crop_size
from ahiq.models.weights import create_backbone
from ahiq.utils.errors import UserError, arg
from ahiq.utils.io import atomic_write

# The timm architectures pyiqa's AHIQ builds, and its prefixes for them in ``params``.
PYIQA_BACKBONES = {"vit": ("vit_base_patch8_224", "vit"), "cnn": ("resnet50", "resnet50")}
ONNX_OPSET = 19  # the first with DeformConv


def check_pyiqa_architecture(config: ModelConfig) -> None:
    """A :class:`UserError` unless ``config`` is the authors' architecture (tags and normalisation aside)."""
    ours, theirs = config.to_dict(), ModelConfig().to_dict()
    for part in ("vit", "cnn"):
        ours[part], theirs[part] = ours[part].split(".")[0], theirs[part].split(".")[0]
    wrong = [f"{k}={ours[k]}" for k in ours if k not in ("normalization", *IMPLEMENTATION_ONLY) and ours[k] != theirs[k]]
    if wrong:
        raise UserError(f"pyiqa's AHIQ is the authors' architecture only (ViT-B/8 blocks 1-5, ResNet-50 layer1, "
                        f"deformable fusion, weighted pooling, default widths); this model has {', '.join(wrong)}: "
                        "export it to ONNX instead")


def pyiqa_metric_options(config: ModelConfig) -> dict[str, list[float]]:
    """The keyword arguments of ``pyiqa.create_metric("ahiq", ...)`` that make its input normalisation ours."""
    mean, std = NORMALISATIONS[config.normalization]
    return {"default_mean": list(mean), "default_std": list(std)}


def _check_same(ours: dict[str, torch.Tensor], whole: dict[str, torch.Tensor], part: str) -> None:
    wrong = [k for k, v in ours.items() if k not in whole or not torch.equal(v.cpu(), whole[k].cpu())]
    if wrong:
        raise RuntimeError(f"the whole {part} rebuilt from its source differs from the model's at {wrong[:3]}")


def whole_backbones(model: AHIQ) -> dict[str, nn.Module]:
    """``{"vit", "cnn"}``: the whole timm models of ``model``'s backbones, checked equal where the model runs them."""
    config = model.config
    vit = create_backbone(model.backbone_sources["vit"], "vit_weights", **config.vit_kwargs)
    cnn = create_backbone(model.backbone_sources["cnn"], "cnn_weights", **config.cnn_kwargs)
    _check_same(model.vit.model.state_dict(), vit.state_dict(), "ViT")  # the pruned timm model keeps timm's names
    _check_same(model.cnn.state_dict(), ResNetFeatures(cnn, config.cnn_stage).state_dict(), "ResNet")
    return {"vit": vit.eval(), "cnn": cnn.eval()}


def pyiqa_checkpoint(model: AHIQ, whole: dict[str, nn.Module] | None = None) -> dict:
    """What ``pyiqa.create_metric("ahiq", pretrained_model_path=FILE)`` loads: ``{"params": ..., "ahiq": metadata}``."""
    check_pyiqa_architecture(model.config)
    whole = whole or whole_backbones(model)
    state = {}
    for prefix, module in ((PYIQA_BACKBONES["vit"][1], whole["vit"]), (PYIQA_BACKBONES["cnn"][1], whole["cnn"]),
                           ("deform_net", model.deform_net), ("regressor", model.regressor)):
        state.update({f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()})
    meta = {k: v for k, v in getattr(model, "checkpoint_meta", {}).items() if k not in ("model_config", "backbones")}
    return {"params": state, META_KEY: checkpoint_dict(model, meta)[META_KEY]}


def check_hub_cache(folder: str | Path) -> None:
    from huggingface_hub import constants

    if Path(folder).resolve() == Path(constants.HF_HUB_CACHE).resolve():
        raise UserError(f"{arg('hub_cache')}{folder}: is your Hugging Face hub cache, where these weights would "
                        "stand in for timm's real ones; give a folder of its own")


def write_hub_cache(folder: str | Path, whole: dict[str, nn.Module]) -> list[str]:
    """Write ``folder`` as a Hugging Face hub cache of ``whole``'s backbones under pyiqa's tags, for
    ``HF_HUB_CACHE=folder HF_HUB_OFFLINE=1``; return the repositories written."""
    import timm
    from safetensors.torch import save_file

    check_hub_cache(folder)
    folder = Path(folder)
    repos = []
    for part, (name, _) in PYIQA_BACKBONES.items():
        repo = timm.models.get_pretrained_cfg(name).hf_hub_id
        commit = hashlib.sha1(repo.encode()).hexdigest()  # any revision name serves: offline, refs/main points to it
        root = folder / f"models--{repo.replace('/', '--')}"
        tensors = {k: v.detach().cpu().contiguous() for k, v in whole[part].state_dict().items()}
        target = root / "snapshots" / commit / "model.safetensors"
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda tmp, tensors=tensors: save_file(tensors, tmp))
        (root / "refs").mkdir(exist_ok=True)
        atomic_write(root / "refs" / "main", lambda tmp, commit=commit: Path(tmp).write_text(commit))
        repos.append(repo)
    return repos


def check_onnx_exporter() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise UserError("ONNX export needs the onnx and onnxscript packages: pip install onnx onnxscript "
                        "onnxruntime") from None


def export_onnx(model: AHIQ, path: str | Path, crop_size: int) -> None:
    """Write ``model``'s graph ``dist``, ``ref`` ``(B, 3, crop, crop)`` in [0, 1] -> ``score (B,)`` to ``path``."""
    check_onnx_exporter()
    check_crop_size(crop_size)
    from onnxscript import opset19 as op

    def deform_conv2d(input, weight, offset, mask, bias, stride_h: int, stride_w: int, pad_h: int, pad_w: int,
                      dilation_h: int, dilation_w: int, groups: int, offset_groups: int, use_mask: bool):
        """torchvision's ``deform_conv2d`` as ONNX ``DeformConv`` (offsets in the same (dy, dx) per tap layout)."""
        return op.DeformConv(input, weight, offset, bias, dilations=[dilation_h, dilation_w], group=groups,
                             offset_group=offset_groups, pads=[pad_h, pad_w, pad_h, pad_w], strides=[stride_h, stride_w])

    gen = torch.Generator().manual_seed(0)
    example = tuple(torch.rand(2, 3, crop_size, crop_size, generator=gen) for _ in range(2))  # batch 2: not specialised
    batch = torch.export.Dim("batch")
    fusion = model.eval().deform_net
    impl = fusion.impl if isinstance(fusion, DeformFusion) else None
    if impl is not None:  # torchvision's operator, the one that exports (as DeformConv); the model's own is put back
        fusion.impl = "torchvision"
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*axis name")  # one Dim named for both inputs, as meant
            program = torch.onnx.export(
                model, example, dynamo=True, verbose=False, input_names=["dist", "ref"], output_names=["score"],
                dynamic_shapes={"dist": {0: batch}, "ref": {0: batch}}, opset_version=ONNX_OPSET,
                custom_translation_table={torch.ops.torchvision.deform_conv2d.default: deform_conv2d})
    finally:
        if impl is not None:
            fusion.impl = impl
    atomic_write(path, lambda tmp: program.save(tmp, external_data=False))
