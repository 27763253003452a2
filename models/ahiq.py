"""The AHIQ network, top to bottom (spec §1; defaults: ViT-B/8 blocks 1-5, ResNet-50 layer1, 224 crops)::

    dist, ref (B, 3, 224, 224) in [0, 1]  -> normalise -> one backbone pass over both images
    ViT (B, 2, 3840, 28, 28)              CNN (B, 2, 768, 56, 56)
    offsets from the reference's ViT map   (B, 18, 56, 56), once per pair
    DeformFusion(CNN, offsets)             (B, 2, 768, 28, 28)
    PatchScoreHead: project concat(ViT, fused) -> 256 channels per image; compare (dist - ref, dist, ref)
                                           -> score map f, weight map w (B, 1, 28, 28)
    score = sum(f * w) / sum(w)            (B,)
"""
from __future__ import annotations

import json

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from torchvision.ops import DeformConv2d

from ahiq.models.ablations import ConvFusion, ResampleFusion, downsampling_convs
from ahiq.models.backbones import Features, ResNetFeatures, ViTFeatures, build_resnet, build_vit
from ahiq.models.config import CHOICES, NORMALISATIONS, ModelConfig  # noqa: F401  (the network's public names)
from ahiq.models.deform import deform_conv3x3, deform_conv3x3_torchvision, upsampled_conv3x3
from ahiq.models.reference import ReferenceSide
from ahiq.models.weights import BackboneSource, backbone_source, check_available, drawn_seed
from ahiq.utils.errors import UserError, arg


class DeformFusion(nn.Module):
    """CNN features fused, steered by the reference's ViT map: ``offsets(vit_ref, size)`` ``(B, C_vit, h, w)`` ->
    ``(B, 18, H, W)``; ``forward(cnn, offset)`` ``(B * k, C_cnn, H, W)`` -> ``(B * k, C_cnn, h, w)``."""

    def __init__(self, vit_channels: int = 3840, cnn_channels: int = 768, scale: int = 2, hidden: int = 512,
                 impl: str = "sampled"):
        super().__init__()
        self.impl = impl
        self.conv_offset = nn.Conv2d(vit_channels, 2 * 3 * 3, 3, 1, 1)
        self.deform = DeformConv2d(cnn_channels, cnn_channels, 3, 1, 1)
        self.conv1 = downsampling_convs(cnn_channels, hidden, scale)

    def offsets(self, vit_ref: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.impl == "torchvision":  # the authors' way: the upsampled map itself
            return self.conv_offset(F.interpolate(vit_ref, size=size, mode="nearest"))
        return upsampled_conv3x3(vit_ref, size, self.conv_offset.weight, self.conv_offset.bias)

    def forward(self, cnn: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        deform = deform_conv3x3 if self.impl == "sampled" else deform_conv3x3_torchvision
        return self.conv1(deform(cnn, offset, self.deform.weight, self.deform.bias))


class PatchScoreHead(nn.Module):
    """``project(x)``: features ``(N, C, h, w)`` -> terms ``(N, channels, h, w)``; ``compare(dist, ref)``: two terms
    -> ``score (N,)`` and maps ``f``, ``w`` ``(N, 1, h, w)``, ``score = sum(f * w) / sum(w)`` (or the mean of f)."""

    def __init__(self, in_channels: int = 4608, channels: int = 256, hidden: int = 1024, smoothed: int = 512,
                 pooling: str = "weighted"):
        super().__init__()
        self.pooling = pooling
        self.down_channel = nn.Conv2d(in_channels, channels, kernel_size=1)
        self.feat_smoothing = nn.Sequential(nn.Conv2d(3 * channels, hidden, 3, padding=1), nn.ReLU(),
                                            nn.Conv2d(hidden, smoothed, 3, padding=1))
        self.conv1 = nn.Sequential(nn.Conv2d(smoothed, channels, 3, padding=1), nn.ReLU())
        if pooling == "weighted":  # the mean-pooling ablation has no weight branch
            self.conv_attent = nn.Sequential(nn.Conv2d(channels, 1, kernel_size=1), nn.Sigmoid())
        self.conv = nn.Sequential(nn.Conv2d(channels, 1, kernel_size=1))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_channel(x)

    def compare(self, dist: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat = self.conv1(self.feat_smoothing(torch.cat((dist - ref, dist, ref), dim=1)))
        f = self.conv(feat)
        if self.pooling == "mean":
            return f.mean(dim=(2, 3)).squeeze(1), f, torch.ones_like(f)
        w = self.conv_attent(feat)
        return ((f * w).sum(dim=(2, 3)) / w.sum(dim=(2, 3))).squeeze(1), f, w


class AHIQ(nn.Module):
    """Full-reference quality: ``forward(dist, ref)`` ``(B, 3, H, W)`` in [0, 1] or uint8, H, W multiples of 32 ->
    scores ``(B,)`` (``return_maps``: also f and w ``(B, 1, H/p, W/p)``). The backbones are frozen."""

    def __init__(self, vit: Features | None, cnn: Features | None, config: ModelConfig | None = None):
        super().__init__()
        self.config = config = config or ModelConfig()
        if (vit is None) != (config.branches == "cnn") or (cnn is None) != (config.branches == "vit"):
            raise ValueError(f"branches={config.branches} needs " + {"both": "both backbones", "vit": "the ViT only",
                                                                     "cnn": "the CNN only"}[config.branches])
        self.vit, self.cnn = vit, cnn
        self.patch_size = vit.reduction if vit is not None else config.patch_size
        self.backbone_sources: dict[str, BackboneSource] = {}
        self.record = None  # models.checkpoint.CheckpointRecord, once loaded
        channels = sum(net.out_channels for net in (vit, cnn) if net is not None)
        self.deform_net = nn.Module() if cnn is None else self._fusion(vit, cnn)  # no CNN: an empty dict to keep
        self.regressor = PatchScoreHead(channels, pooling=config.pooling, **config.head_kwargs)
        mean, std = NORMALISATIONS[config.normalization]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.checkpoint_fusion = False

    def _fusion(self, vit: Features | None, cnn: Features) -> nn.Module:
        config, scale = self.config, self.patch_size // cnn.reduction
        if config.fusion == "deform":  # without ViT the CNN map steers
            steer = (vit if vit is not None else cnn).out_channels
            return DeformFusion(steer, cnn.out_channels, scale, impl=config.deform_impl, **config.fusion_kwargs)
        if config.fusion == "conv":
            return ConvFusion(cnn.out_channels, scale, **config.fusion_kwargs)
        return ResampleFusion(scale)

    def forward(self, dist: torch.Tensor, ref: torch.Tensor, return_maps: bool = False):
        if dist.shape != ref.shape:
            raise ValueError(f"distorted {tuple(dist.shape)} and reference {tuple(ref.shape)} differ in shape")
        b = dist.shape[0]
        vit, cnn = self.features(torch.stack((dist, ref), dim=1).flatten(0, 1))  # pairs adjacent: (d0, r0, d1, ...)
        ref_only = [None if t is None else t.unflatten(0, (b, 2))[:, 1] for t in (vit, cnn)]
        # Both crops of a pair go through the fusion and the projection in one call (k = 2 maps per offsets).
        terms = self.terms(vit, cnn, self.offsets(*ref_only)).unflatten(0, (b, 2))
        score, f, w = self.regressor.compare(terms[:, 0], terms[:, 1])
        return (score, f, w) if return_maps else score

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.float() / 255 if x.dtype == torch.uint8 else x) - self.mean) / self.std

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Images ``(N, 3, H, W)`` -> ViT map ``(N, C_vit, H/p, W/p)`` and CNN map (None for an absent branch)."""
        x = self.normalise(x)
        return tuple(None if net is None else net(x) for net in (self.vit, self.cnn))  # type: ignore[return-value]

    def offsets(self, vit_ref: torch.Tensor | None, cnn_ref: torch.Tensor | None) -> torch.Tensor | None:
        """The fusion's offsets from the reference crops' features (None without CNN branch or deformable conv)."""
        if cnn_ref is None or not isinstance(self.deform_net, DeformFusion):
            return None
        return self.deform_net.offsets(vit_ref if vit_ref is not None else cnn_ref, cnn_ref.shape[-2:])

    def terms(self, vit: torch.Tensor | None, cnn: torch.Tensor | None, offset: torch.Tensor | None) -> torch.Tensor:
        """Features of images (and the offsets of their references) -> the head's terms ``(N, channels, h, w)``."""
        parts = [] if vit is None else [vit]
        if cnn is not None:
            run = self.checkpoint_fusion and torch.is_grad_enabled()
            fused = checkpoint(self.deform_net, cnn, offset, use_reentrant=False) if run else self.deform_net(cnn, offset)
            parts.append(fused.to(parts[0].dtype if parts else cnn.dtype))
        return self.regressor.project(torch.cat(parts, dim=1))

    def encode_reference(self, ref: torch.Tensor) -> ReferenceSide:
        """Reference crops ``(N, 3, H, W)`` -> their :class:`models.reference.ReferenceSide`."""
        vit, cnn = self.features(ref)
        offset = self.offsets(vit, cnn)
        return ReferenceSide(offset=offset, terms=self.terms(vit, cnn, offset))

    def score_distorted(self, dist: torch.Tensor, side: ReferenceSide, return_maps: bool = False):
        """``forward(dist, ref)`` with ``ref``'s side already computed: crops ``(N, 3, H, W)`` against ``side``'s rows."""
        grid = (dist.shape[-2] // self.patch_size, dist.shape[-1] // self.patch_size)
        if len(side) != len(dist) or side.terms.shape[-2:] != grid:
            raise ValueError(f"distorted {tuple(dist.shape)} does not match a reference side of {len(side)} crops "
                             f"with {tuple(side.terms.shape[-2:])} patches")
        vit, cnn = self.features(dist)
        score, f, w = self.regressor.compare(self.terms(vit, cnn, side.offset), side.terms)
        return (score, f, w) if return_maps else score

    def input_gradients(self, enabled: bool = True) -> "AHIQ":
        """Let gradients reach the input images through the frozen backbones (AHIQ as a loss)."""
        for backbone in (self.vit, self.cnn):
            if backbone is not None:
                backbone.input_grad = enabled
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the ViT blocks and the fusion in the backward pass instead of storing their activations."""
        if self.vit is not None:
            self.vit.set_grad_checkpointing(enable)
        self.checkpoint_fusion = enable


def check_architecture(config: ModelConfig) -> AHIQ:
    """The network on the meta device (milliseconds): what timm refuses is one line when the options are read."""
    parts = {"vit": (config.vit, config.vit_kwargs, {"dynamic_img_size": True}), "cnn": (config.cnn, config.cnn_kwargs, {})}
    nets = {}
    with torch.device("meta"):
        for part, (name, kwargs, ours) in parts.items():
            if config.branches == {"vit": "cnn", "cnn": "vit"}[part]:
                continue
            try:
                nets[part] = timm.create_model(name, pretrained=False, **kwargs, **ours)
            except (TypeError, ValueError, RuntimeError, KeyError, AssertionError, AttributeError, IndexError) as err:
                shown = f" with {arg(part + '_kwargs')}{json.dumps(kwargs)}" if kwargs else ""
                raise UserError(f"{arg(part)}{name}{shown}: timm cannot build it ({type(err).__name__}: {err})") from None
        return AHIQ(ViTFeatures(nets["vit"], config.vit_blocks) if "vit" in nets else None,
                    ResNetFeatures(nets["cnn"], config.cnn_stage) if "cnn" in nets else None, config)


def build_ahiq(config: ModelConfig | None = None, pretrained_backbones: bool = True,
               vit_weights: str | None = None, cnn_weights: str | None = None, seed: int | None = None,
               sources: dict[str, BackboneSource] | None = None) -> AHIQ:
    """An AHIQ network with backbones from ``sources`` (else the arguments; one seed for both, drawn when not given)
    and a random fusion and head."""
    config = config or ModelConfig()
    if not sources:
        seed = drawn_seed() if seed is None else seed
        sources = {"vit": backbone_source(config.vit, pretrained_backbones, vit_weights, seed),
                   "cnn": backbone_source(config.cnn, pretrained_backbones, cnn_weights, seed)}
    used = {part: sources[part] for part, skip in (("vit", "cnn"), ("cnn", "vit")) if config.branches != skip}
    check_available(list(used.values()), ("vit_weights", "cnn_weights"))
    vit = build_vit(used["vit"], config.vit_blocks, **config.vit_kwargs) if "vit" in used else None
    cnn = build_resnet(used["cnn"], config.cnn_stage, **config.cnn_kwargs) if "cnn" in used else None
    model = AHIQ(vit, cnn, config)
    model.backbone_sources = used
    return model
