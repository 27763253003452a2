"""Frozen timm backbones that run only the layers AHIQ reads (no forward hooks); weights: :mod:`models.weights`."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ahiq.models.config import DEFAULT_CNN_STAGE, DEFAULT_VIT_BLOCKS
from ahiq.models.weights import BackboneSource, create_backbone
from ahiq.utils.errors import UserError, arg


class Features(nn.Module):
    """A frozen backbone: normalised images ``(B, 3, H, W)`` -> ``(B, out_channels, H / reduction, W / reduction)``;
    in eval mode, without trainable parameters, it builds no graph unless ``input_grad`` (AHIQ as a loss)."""

    out_channels: int
    reduction: int
    input_grad: bool = False

    def _grad_mode(self) -> torch.set_grad_enabled:
        return torch.set_grad_enabled(self.input_grad and torch.is_grad_enabled())

    def train(self, mode: bool = True) -> "Features":
        return super().train(False)


class ViTFeatures(Features):
    """Token maps of selected blocks (1-based) of a timm ViT, later blocks pruned: ``(B, 3, H, W)`` ->
    ``(B, len(blocks) * D, H / p, W / p)``; default blocks 1-5 of ViT-B/8, ``(B, 3840, H/8, W/8)``."""

    def __init__(self, model: nn.Module, blocks: Sequence[int] = DEFAULT_VIT_BLOCKS):
        super().__init__()
        blocks = tuple(int(b) for b in blocks)
        if not all(hasattr(model, n) for n in ("blocks", "patch_embed", "forward_intermediates",
                                               "prune_intermediate_layers")):
            raise UserError(f"{type(model).__name__} is not a timm VisionTransformer; choose a vit_* model "
                            f"for {arg('vit')}")
        n_blocks = len(model.blocks)
        if not blocks or min(blocks) < 1 or max(blocks) > n_blocks or list(blocks) != sorted(set(blocks)):
            raise UserError(f"{arg('vit_blocks')}{','.join(map(str, blocks))}: need increasing block numbers "
                            f"in 1..{n_blocks}")
        if not getattr(model, "dynamic_img_size", False):
            raise ValueError("build the ViT with dynamic_img_size=True (see build_vit)")
        self.indices = [b - 1 for b in blocks]
        model.prune_intermediate_layers(self.indices, prune_norm=True, prune_head=True)
        self.model = model
        self.patch_size = self.reduction = int(model.patch_embed.patch_size[0])
        self.out_channels = int(model.embed_dim) * len(blocks)
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._grad_mode():
            maps = self.model.forward_intermediates(x, indices=self.indices, stop_early=True, intermediates_only=True,
                                                    output_fmt="NCHW")
            return torch.cat(maps, dim=1)  # (B, len(blocks)*D, h, w), the authors' channel order

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)


def build_vit(source: BackboneSource, blocks: Sequence[int], **timm_kwargs) -> ViTFeatures:
    """A :class:`ViTFeatures` of ``source``'s timm model; ``timm_kwargs`` change it (e.g. ``depth``, ``embed_dim``)."""
    return ViTFeatures(create_backbone(source, weights_arg="vit_weights", dynamic_img_size=True, **timm_kwargs), blocks)


def build_resnet(source: BackboneSource, stage: int, **timm_kwargs) -> "ResNetFeatures":
    """A :class:`ResNetFeatures` of ``source``'s timm model; ``timm_kwargs`` change it (e.g. ``layers``, ``channels``)."""
    return ResNetFeatures(create_backbone(source, weights_arg="cnn_weights", **timm_kwargs), stage)


class ResNetFeatures(Features):
    """Outputs of every block of one stage of a timm ResNet, concatenated on channels: ``(B, 3, H, W)`` ->
    ``(B, n_blocks * C, H / r, W / r)``. Default: ResNet-50 ``layer1``, ``(B, 768, H/4, W/4)``."""

    def __init__(self, model: nn.Module, stage: int = DEFAULT_CNN_STAGE):
        super().__init__()
        if not all(hasattr(model, n) for n in ("conv1", "bn1", "act1", "maxpool", "layer1")):
            raise UserError(f"{type(model).__name__} is not a timm ResNet; choose a resnet* model for {arg('cnn')}")
        if not 1 <= stage <= 4:
            raise UserError(f"{arg('cnn_stage')}{stage}: must be 1..4")
        self.stem = nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool)
        self.stages = nn.ModuleList(getattr(model, f"layer{i}") for i in range(1, stage + 1))
        info = {f["module"]: f for f in model.feature_info}
        self.reduction = int(info[f"layer{stage}"]["reduction"])
        self.out_channels = int(info[f"layer{stage}"]["num_chs"]) * len(self.stages[-1])
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._grad_mode():
            x = self.stem(x)
            for stage in self.stages[:-1]:
                x = stage(x)
            outputs = []
            for block in self.stages[-1]:
                x = block(x)
                outputs.append(x)
            return torch.cat(outputs, dim=1)
