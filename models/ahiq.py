"""The AHIQ network: frozen ViT and ResNet features, deformable fusion, patch-wise score head.

Data path for one batch of crop pairs (defaults: ViT-B/8 blocks 1-5, ResNet-50 layer1, 224x224 crops)::

    dist, ref (B, 3, 224, 224) in [0, 1]  -> normalise -> one backbone pass over both images
    ViT  -> (B, 2, 3840, 28, 28)          CNN -> (B, 2, 768, 56, 56)
    offsets from the reference's ViT map   -> (B, 18, 56, 56), computed once per pair
    DeformFusion(CNN, offsets)             -> (B, 2, 768, 28, 28)
    PatchScoreHead(concat(ViT, fused))     -> score map f, weight map w (B, 1, 28, 28)
    score = sum(f * w) / sum(w)            -> (B,)

Ablations of the paper (``ModelConfig``; defaults are the authors'): ``branches`` vit / cnn (one backbone
only), ``fusion`` conv (a plain 3x3 conv in place of the deformable one) / none (CNN features only
resampled to the ViT grid), ``pooling`` mean (score = mean of f, no weight map).

``forward(dist, ref)`` computes the same terms as ``reference_side`` followed by ``distorted_side``, with
both crops of each pair in one backbone pass and one fusion/projection call; ``encode_reference`` and
``score_distorted`` are those two halves, to reuse a reference's side (its offsets and the head's
projection of its features) for all its distorted images.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from torchvision.ops import DeformConv2d

from models.backbones import (
    DEFAULT_CNN,
    DEFAULT_CNN_STAGE,
    DEFAULT_VIT,
    DEFAULT_VIT_BLOCKS,
    BackboneSource,
    ResNetFeatures,
    ViTFeatures,
    backbone_source,
    build_resnet,
    build_vit,
    check_available,
)
from models.deform import deform_conv3x3, deform_conv3x3_torchvision
from utils.errors import UserError, arg

# Architecture switches of ModelConfig and their values; the first is the authors' (the default).
CHOICES = {"branches": ("both", "vit", "cnn"), "fusion": ("deform", "conv", "none"), "pooling": ("weighted", "mean")}

NORMALISATIONS = {
    # The authors' (and the released checkpoint's): (x - 0.5) / 0.5 for both backbones.
    "authors": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    # pyiqa's choice; gives different scores with the released heads.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass
class ModelConfig:
    """What defines an AHIQ network; stored in our checkpoints so a model is rebuilt exactly.

    ``vit_kwargs`` / ``cnn_kwargs`` are timm keyword arguments that change a backbone's architecture, e.g.
    ``{"depth": 2, "embed_dim": 32, "num_heads": 2}`` for a narrow two-block ViT or ``{"layers": [1, 1, 1, 1],
    "channels": [16, 32, 64, 128], "stem_width": 16}`` for a small ResNet (ablations, fast tests). Pretrained
    weights of the named tag no longer fit such a backbone: use random ones or a weight file made for it.
    ``head_kwargs`` (``channels``, ``hidden``, ``smoothed`` of :class:`PatchScoreHead`) and ``fusion_kwargs``
    (``hidden`` of :class:`DeformFusion`) narrow the trained layers the same way; empty = the authors' sizes.
    """

    vit: str = DEFAULT_VIT
    vit_blocks: tuple[int, ...] = DEFAULT_VIT_BLOCKS
    cnn: str = DEFAULT_CNN
    cnn_stage: int = DEFAULT_CNN_STAGE
    normalization: str = "authors"
    deform_impl: str = "sampled"  # deformable conv: sampled (sampling + GEMM, fast) or torchvision (reference)
    vit_kwargs: dict[str, Any] = field(default_factory=dict)
    cnn_kwargs: dict[str, Any] = field(default_factory=dict)
    head_kwargs: dict[str, int] = field(default_factory=dict)
    fusion_kwargs: dict[str, int] = field(default_factory=dict)
    branches: str = "both"        # both, vit (no CNN), cnn (no ViT)
    fusion: str = "deform"        # deform (steered by the reference), conv (plain 3x3), none (resampled only)
    pooling: str = "weighted"     # weighted: sum(f * w) / sum(w); mean: mean of f

    def __post_init__(self):
        """Check every field and every combination, so that a config that constructs also builds."""
        self.vit_blocks = tuple(int(b) for b in self.vit_blocks)
        self.vit_kwargs = _timm_kwargs(self.vit_kwargs, "vit_kwargs")
        self.cnn_kwargs = _timm_kwargs(self.cnn_kwargs, "cnn_kwargs")
        self.head_kwargs = _widths(self.head_kwargs, "head_kwargs", ("channels", "hidden", "smoothed"))
        self.fusion_kwargs = _widths(self.fusion_kwargs, "fusion_kwargs", ("hidden",))
        if self.normalization not in NORMALISATIONS:
            raise UserError(f"{arg('normalization')}{self.normalization}: choose one of {', '.join(NORMALISATIONS)}")
        if self.deform_impl not in ("sampled", "torchvision"):
            raise UserError(f"{arg('deform_impl')}{self.deform_impl}: choose sampled or torchvision")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise UserError(f"{arg(name)}{getattr(self, name)}: choose one of {', '.join(allowed)}")
        if self.branches == "vit" and self.fusion != "none":
            raise UserError(f"{arg('branches')}vit has no CNN features to fuse; set {arg('fusion')}none")
        if self.branches != "vit":
            patch = self.patch_size
            if patch is None:
                raise UserError(f"{arg('vit')}{self.vit}: no patchN in the name, so the score grid is unknown; "
                                "give a timm ViT name like vit_base_patch8_224")
            reduction = 2 ** (int(self.cnn_stage) + 1)  # timm ResNet stages 1..4 reduce by 4, 8, 16, 32
            if not 1 <= int(self.cnn_stage) <= 4 or patch % reduction or patch // reduction not in (1, 2, 4):
                raise UserError(f"{arg('cnn_stage')}{self.cnn_stage}: the CNN grid (1/{reduction}) must be 1, 2 or 4 "
                                f"times the patch-{patch} grid (patch 8: stages 1-2, patch 16: stages 1-3)")

    @property
    def patch_size(self) -> int | None:
        """The ViT patch size: ``vit_kwargs['patch_size']``, else read from the timm name (``vit_base_patch8_224``
        -> 8)."""
        if "patch_size" in self.vit_kwargs:
            return int(self.vit_kwargs["patch_size"])
        found = re.search(r"patch(\d+)", self.vit)
        return int(found.group(1)) if found else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _timm_kwargs(value: Any, name: str) -> dict[str, Any]:
    """A copy of ``value`` with lists made tuples, so a config read back from JSON compares equal."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise UserError(f"{arg(name)}{value!r}: give timm keyword arguments as a dict, e.g. {{\"depth\": 2}}")
    if "dynamic_img_size" in value:
        raise UserError(f"{arg(name)}{value!r}: dynamic_img_size is set by AHIQ itself; leave it out")

    def frozen(v: Any) -> Any:
        return tuple(frozen(x) for x in v) if isinstance(v, (list, tuple)) else v

    return {k: frozen(v) for k, v in sorted(value.items())}


def _widths(value: Any, name: str, known: tuple[str, ...]) -> dict[str, int]:
    """Layer widths ``{name: positive int}`` with names from ``known``."""
    value = value or {}
    if not isinstance(value, dict) or set(value) - set(known) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value.values()):
        raise UserError(f"{arg(name)}{value!r}: give positive integer widths for {', '.join(known)}")
    return dict(sorted(value.items()))


def phase_kernels(weight: torch.Tensor, bias: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewrite "nearest-upsample by ``scale``, then 3x3 conv" as one 3x3 conv on the small map.

    Output pixel ``(s*i + a, s*j + b)`` of the original reads small-map rows ``i + (a + t - 1) // s`` for
    taps ``t = 0, 1, 2``; summing the taps that land on the same small-map pixel gives, for each phase
    ``(a, b)``, a 3x3 kernel on the small map. Stacking the phases on output channels in pixel-shuffle
    order makes ``pixel_shuffle(conv(small, K), s)`` equal to the original, without the upsampled tensor.
    """
    s = scale
    hit = torch.zeros(s, 3, 3, dtype=weight.dtype, device=weight.device)  # [phase, source offset + 1, tap]
    for a in range(s):
        for t in range(3):
            hit[a, (a + t - 1) // s + 1, t] = 1
    kernel = torch.einsum("ayt,bxu,octu->oabcyx", hit, hit, weight)
    out_ch, in_ch = weight.shape[:2]
    return kernel.reshape(out_ch * s * s, in_ch, 3, 3), bias.repeat_interleave(s * s)


def downsampling_convs(channels: int, hidden: int, scale: int) -> nn.Sequential:
    """conv3x3 (stride 2 when ``scale >= 2``), ReLU, conv3x3 (stride ``scale / 2``): the CNN grid to the ViT grid."""
    first, second = (2, scale // 2) if scale >= 2 else (1, 1)
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 3, padding=1, stride=first),
        nn.ReLU(),
        nn.Conv2d(hidden, channels, 3, padding=1, stride=second),
    )


class DeformFusion(nn.Module):
    """Deformable fusion of CNN features, steered by offsets from the reference's ViT features.

    ``offsets(vit_ref, size)``: ``(B, C_vit, h, w)`` -> ``(B, 18, H, W)`` (nearest upsample to the CNN grid
    ``(H, W)``, then 3x3 conv). ``forward(cnn, offset)``: ``(B * k, C_cnn, H, W)`` with consecutive groups
    of ``k`` maps sharing ``offset[b]`` -> ``(B * k, C_cnn, h, w)`` (deform conv, conv3x3 stride 2, ReLU,
    conv3x3 with stride ``scale / 2``). Parameter names are the authors' (``conv_offset``, ``deform``, ``conv1``).
    """

    def __init__(self, vit_channels: int = 3840, cnn_channels: int = 768, scale: int = 2, hidden: int = 512,
                 impl: str = "sampled"):
        super().__init__()
        if scale not in (1, 2, 4):
            raise UserError(f"the CNN grid must be 1, 2 or 4 times the ViT grid (got {scale}); "
                            f"pick {arg('cnn_stage')}to match the ViT patch size")
        self.scale = scale
        self.impl = impl
        self.conv_offset = nn.Conv2d(vit_channels, 2 * 3 * 3, 3, 1, 1)
        self.deform = DeformConv2d(cnn_channels, cnn_channels, 3, 1, 1)
        self.conv1 = downsampling_convs(cnn_channels, hidden, scale)

    def offsets(self, vit_ref: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = vit_ref.shape[-2:]
        if (size[0] % h or size[1] % w or size[0] // h != size[1] // w) or self.impl == "torchvision":
            return self.conv_offset(F.interpolate(vit_ref, size=size, mode="nearest"))
        scale = size[0] // h
        if scale == 1:
            return self.conv_offset(vit_ref)
        kernel, bias = phase_kernels(self.conv_offset.weight, self.conv_offset.bias, scale)
        return F.pixel_shuffle(F.conv2d(vit_ref, kernel.to(vit_ref.dtype), bias.to(vit_ref.dtype), padding=1), scale)

    def forward(self, cnn: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        deform = deform_conv3x3 if self.impl == "sampled" else deform_conv3x3_torchvision
        return self.conv1(deform(cnn, offset, self.deform.weight, self.deform.bias))


class ConvFusion(nn.Module):
    """The "without deformable conv" ablation: :class:`DeformFusion` with a plain 3x3 conv of the same shape
    (``conv``, ``C_cnn -> C_cnn``) in place of the deformable one, and nothing to steer it.
    ``forward(cnn, None)``: ``(N, C_cnn, H, W)`` -> ``(N, C_cnn, h, w)``."""

    def __init__(self, cnn_channels: int = 768, scale: int = 2, hidden: int = 512):
        super().__init__()
        self.scale = scale
        self.conv = nn.Conv2d(cnn_channels, cnn_channels, 3, 1, 1)
        self.conv1 = downsampling_convs(cnn_channels, hidden, scale)

    def offsets(self, steer: torch.Tensor, size: tuple[int, int]) -> None:
        return None

    def forward(self, cnn: torch.Tensor, offset: None = None) -> torch.Tensor:
        return self.conv1(self.conv(cnn))


class ResampleFusion(nn.Module):
    """The "no fusion" ablation: CNN features only averaged over ``scale x scale`` cells onto the ViT grid
    (no parameters). ``forward(cnn, None)``: ``(N, C, H, W)`` -> ``(N, C, H / scale, W / scale)``."""

    def __init__(self, scale: int = 2):
        super().__init__()
        self.scale = scale

    def offsets(self, steer: torch.Tensor, size: tuple[int, int]) -> None:
        return None

    def forward(self, cnn: torch.Tensor, offset: None = None) -> torch.Tensor:
        return F.avg_pool2d(cnn, self.scale) if self.scale > 1 else cnn


class PatchScoreHead(nn.Module):
    """Patch-wise score and weight maps from the distorted/reference feature pair.

    Input ``(B, 2, C, h, w)`` (index 0 distorted, 1 reference; ``C`` = ViT + fused CNN channels, or one of
    them in the single-branch ablations). Returns ``score (B,)``, score map ``f (B, 1, h, w)`` and weight map
    ``w (B, 1, h, w)`` with ``score = sum(f * w) / sum(w)`` (``pooling='mean'``: the mean of f, w all ones).
    Parameter names are the authors'.
    """

    def __init__(self, in_channels: int = 4608, channels: int = 256, hidden: int = 1024, smoothed: int = 512,
                 pooling: str = "weighted"):
        super().__init__()
        self.pooling = pooling
        self.down_channel = nn.Conv2d(in_channels, channels, kernel_size=1)
        self.feat_smoothing = nn.Sequential(
            nn.Conv2d(3 * channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, smoothed, 3, padding=1),
        )
        self.conv1 = nn.Sequential(nn.Conv2d(smoothed, channels, 3, padding=1), nn.ReLU())
        if pooling == "weighted":  # the mean-pooling ablation has no weight branch
            self.conv_attent = nn.Sequential(nn.Conv2d(channels, 1, kernel_size=1), nn.Sigmoid())
        self.conv = nn.Sequential(nn.Conv2d(channels, 1, kernel_size=1))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(N, C, h, w)`` of one image -> its terms ``(N, channels, h, w)`` (``down_channel``); each
        image is projected alone, so a reference's terms can be kept and reused."""
        return self.down_channel(x)

    def forward(self, pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = pair.shape[0]
        down = self.project(pair.flatten(0, 1)).unflatten(0, (b, 2))
        return self.compare(down[:, 0], down[:, 1])

    def compare(self, dist: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The distorted and reference terms (``project``) -> ``score``, ``f``, ``w`` as ``forward``."""
        feat = self.conv1(self.feat_smoothing(torch.cat((dist - ref, dist, ref), dim=1)))
        f = self.conv(feat)
        if self.pooling == "mean":
            return f.mean(dim=(2, 3)).squeeze(1), f, torch.ones_like(f)
        w = self.conv_attent(feat)
        score = (f * w).sum(dim=(2, 3)) / w.sum(dim=(2, 3))
        return score.squeeze(1), f, w


@dataclass
class ReferenceSide:
    """What the distorted side needs from the reference crops; it depends on them alone.

    Row ``i`` of every tensor belongs to reference crop ``i``: ``offset (N, 18, H, W)`` steers the deformable
    conv of the distorted crop (None for the other fusions); ``terms (N, channels, h, w)`` is the head's
    projection of the reference features. Computed by :meth:`AHIQ.encode_reference`, consumed by
    :meth:`AHIQ.score_distorted`. A new field is carried by ``select``/``cat``/``nbytes`` as long as it is a
    tensor with one row per crop, or None.
    """

    offset: torch.Tensor | None
    terms: torch.Tensor

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def __len__(self) -> int:
        return len(self.terms)

    def select(self, index: torch.Tensor | slice) -> "ReferenceSide":
        """The rows ``index`` (a slice is a view; ``.clone()`` it to keep it alone)."""
        return replace(self, **{k: t[index] for k, t in self._tensors().items()})

    def clone(self) -> "ReferenceSide":
        return replace(self, **{k: t.clone() for k, t in self._tensors().items()})

    @staticmethod
    def cat(sides: list["ReferenceSide"]) -> "ReferenceSide":
        first = sides[0]
        return replace(first, **{k: torch.cat([getattr(s, k) for s in sides]) for k in first._tensors()})

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._tensors().values())


class AHIQ(nn.Module):
    """Full-reference quality of crop pairs.

    ``forward(dist, ref)``: ``(B, 3, H, W)`` RGB, float in [0, 1] or uint8, H and W multiples of 32 ->
    scores ``(B,)``; with ``return_maps=True`` also the score map f and weight map w, ``(B, 1, H/p, W/p)``.
    Only ``deform_net`` and ``regressor`` have trainable parameters; the backbones are frozen and build no
    graph unless :meth:`input_gradients` is on.
    """

    def __init__(self, vit: ViTFeatures | None, cnn: ResNetFeatures | None, config: ModelConfig | None = None):
        super().__init__()
        self.config = config = config or ModelConfig()
        if (vit is None) != (config.branches == "cnn") or (cnn is None) != (config.branches == "vit"):
            raise ValueError(f"branches={config.branches} needs " + {"both": "both backbones", "vit": "the ViT only",
                                                                     "cnn": "the CNN only"}[config.branches])
        self.backbone_sources: dict[str, BackboneSource] = {}  # where the backbones' weights came from (build_ahiq)
        self.vit = vit
        self.cnn = cnn
        self._patch = vit.patch_size if vit is not None else config.patch_size
        in_channels = 0 if vit is None else vit.out_channels
        if cnn is None:
            self.deform_net = nn.Module()  # nothing to fuse; kept so checkpoints keep both dicts
        else:
            if self._patch % cnn.reduction:
                raise UserError(f"ViT patch {self._patch} is not a multiple of the CNN stage reduction "
                                f"{cnn.reduction}; pick another {arg('cnn_stage')}or {arg('vit')}")
            scale = self._patch // cnn.reduction
            # Without ViT features the reference's own CNN features steer the deformable conv.
            steer_channels = vit.out_channels if vit is not None else cnn.out_channels
            if config.fusion == "deform":
                self.deform_net = DeformFusion(steer_channels, cnn.out_channels, scale, impl=config.deform_impl,
                                               **config.fusion_kwargs)
            elif config.fusion == "conv":
                self.deform_net = ConvFusion(cnn.out_channels, scale, **config.fusion_kwargs)
            else:
                self.deform_net = ResampleFusion(scale)
            in_channels += cnn.out_channels
        self.regressor = PatchScoreHead(in_channels, pooling=config.pooling, **config.head_kwargs)
        mean, std = NORMALISATIONS[self.config.normalization]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.checkpoint_fusion = False

    @property
    def patch_size(self) -> int:
        return self._patch

    def input_gradients(self, enabled: bool = True) -> "AHIQ":
        """Let gradients reach the input images through the frozen backbones (AHIQ as a loss).

        Off by default: scoring and training the heads run the backbones without building a graph.
        The backbones' weights never get gradients either way.
        """
        for backbone in (self.vit, self.cnn):
            if backbone is not None:  # one of them is absent in the single-branch ablations
                backbone.input_grad = enabled
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing over the ViT blocks (timm's) and the deformable fusion: their activations
        are recomputed in the backward pass instead of stored. Less memory, more time, same gradients."""
        if self.vit is not None:
            self.vit.set_grad_checkpointing(enable)
        self.checkpoint_fusion = enable

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255
        return (x - self.mean) / self.std

    def forward(self, dist: torch.Tensor, ref: torch.Tensor, return_maps: bool = False):
        if dist.shape != ref.shape:
            raise ValueError(f"distorted {tuple(dist.shape)} and reference {tuple(ref.shape)} differ in shape")
        b = dist.shape[0]
        vit, cnn = self.features(torch.stack((dist, ref), dim=1).flatten(0, 1))  # one backbone pass, pairs adjacent

        def pick(t, k):
            return None if t is None else t.unflatten(0, (b, 2))[:, k]

        # Both crops of a pair go through the fusion and the projection in one call (the deformable conv takes
        # k = 2 maps per set of offsets): the same terms as reference_side + distorted_side, with each weight
        # read (and, in training, its gradient accumulated) once per step instead of twice.
        terms = self._terms(vit, cnn, self._offsets(pick(vit, 1), pick(cnn, 1))).unflatten(0, (b, 2))
        score, f, w = self.regressor.compare(terms[:, 0], terms[:, 1])
        return (score, f, w) if return_maps else score

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Images ``(N, 3, H, W)`` -> ViT map ``(N, C_vit, H/p, W/p)`` and CNN map (None for an absent branch)."""
        x = self.normalise(x)
        return (self.vit(x) if self.vit is not None else None), (self.cnn(x) if self.cnn is not None else None)

    def _terms(self, vit: torch.Tensor | None, cnn: torch.Tensor | None, offset: torch.Tensor | None) -> torch.Tensor:
        parts = [] if vit is None else [vit]
        if cnn is not None:
            if self.checkpoint_fusion and torch.is_grad_enabled():
                fused = checkpoint(self.deform_net, cnn, offset, use_reentrant=False)
            else:
                fused = self.deform_net(cnn, offset)
            parts.append(fused.to(parts[0].dtype if parts else cnn.dtype))
        return self.regressor.project(torch.cat(parts, dim=1))

    def reference_side(self, vit: torch.Tensor | None, cnn: torch.Tensor | None) -> ReferenceSide:
        """Everything computed from the reference crops' features: offsets (None without a deformable fusion;
        without ViT the reference's CNN features steer) and the head's reference terms."""
        offset = self._offsets(vit, cnn)
        return ReferenceSide(offset=offset, terms=self._terms(vit, cnn, offset))

    def _offsets(self, vit: torch.Tensor | None, cnn: torch.Tensor | None) -> torch.Tensor | None:
        """The fusion's offsets from the reference crops' features (None without CNN branch or deformable conv)."""
        return None if cnn is None else self.deform_net.offsets(vit if vit is not None else cnn, cnn.shape[-2:])

    def distorted_side(self, vit: torch.Tensor | None, cnn: torch.Tensor | None, reference: ReferenceSide,
                       return_maps: bool):
        """Scores of distorted crops (features ``vit``, ``cnn``) against ``reference`` row by row."""
        score, f, w = self.regressor.compare(self._terms(vit, cnn, reference.offset), reference.terms)
        return (score, f, w) if return_maps else score

    def encode_reference(self, ref: torch.Tensor) -> ReferenceSide:
        """Reference crops ``(N, 3, H, W)`` -> their :class:`ReferenceSide`, to score any number of distorted crops."""
        return self.reference_side(*self.features(ref))

    def score_distorted(self, dist: torch.Tensor, reference: ReferenceSide, return_maps: bool = False):
        """``forward(dist, ref)`` with the reference side already computed: ``reference`` row ``i`` is ``ref[i]``'s
        (``reference.select(index)`` lines rows up with the distorted crops)."""
        if len(reference) != len(dist) or reference.terms.shape[-2:] != (dist.shape[-2] // self.patch_size,
                                                                         dist.shape[-1] // self.patch_size):
            raise ValueError(f"distorted {tuple(dist.shape)} does not match a reference side of {len(reference)} "
                             f"crops with {tuple(reference.terms.shape[-2:])} patches")
        return self.distorted_side(*self.features(dist), reference, return_maps)


def backbone_sources(config: ModelConfig, pretrained_backbones: bool = True, vit_weights: str | None = None,
                     cnn_weights: str | None = None, seed: int | None = None) -> dict[str, BackboneSource]:
    """``{"vit": ..., "cnn": ...}``: the :class:`BackboneSource` of each backbone the arguments ask for.
    Random backbones without a ``seed`` get one drawn from torch's global generator (so ``torch.manual_seed``
    before still decides them), and it is recorded."""
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, (), device="cpu").item())  # CPU even under a meta-device scope
    return {"vit": backbone_source(config.vit, pretrained_backbones, vit_weights, seed),
            "cnn": backbone_source(config.cnn, pretrained_backbones, cnn_weights, seed)}


def build_ahiq(config: ModelConfig | None = None, pretrained_backbones: bool = True,
               vit_weights: str | None = None, cnn_weights: str | None = None, seed: int | None = None,
               sources: dict[str, BackboneSource] | None = None) -> AHIQ:
    """An AHIQ network with backbones by timm name/tag and untrained (random) fusion and head.

    Backbone weights: ``sources`` when given, else as :func:`backbone_sources` makes them of the other
    arguments (random backbones are drawn from ``seed``, by default one drawn from torch's global generator);
    kept as ``model.backbone_sources``. Pretrained
    weights that cannot be had stop before anything is built.
    """
    config = config or ModelConfig()
    sources = sources or backbone_sources(config, pretrained_backbones, vit_weights, cnn_weights, seed)
    used = {part: sources[part] for part, skip in (("vit", "cnn"), ("cnn", "vit")) if config.branches != skip}
    check_available(list(used.values()), ("vit_weights", "cnn_weights"))
    vit = build_vit(used["vit"], config.vit_blocks, **config.vit_kwargs) if "vit" in used else None
    cnn = build_resnet(used["cnn"], config.cnn_stage, **config.cnn_kwargs) if "cnn" in used else None
    model = AHIQ(vit, cnn, config)
    model.backbone_sources = used
    return model
