"""What defines an AHIQ network (:class:`ModelConfig`): stored in our checkpoints, rebuilt by ``load_model``."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ahiq.utils.declare import SCRIPTS, check_choices, int_list, json_dict, option
from ahiq.utils.errors import UserError, arg

DEFAULT_VIT = "vit_base_patch8_224.augreg_in21k_ft_in1k"
DEFAULT_CNN = "resnet50.a1_in1k"
DEFAULT_VIT_BLOCKS = (1, 2, 3, 4, 5)
DEFAULT_CNN_STAGE = 1
SEED = 1919  # the authors' seed: the default of random crops, random backbones and training (stated only here)
CROP_MULTIPLE = 32  # a crop side must be a multiple of the ResNet's and the ViT's strides
# The default ViT tag of each patch size (--patch_size).
VIT_BY_PATCH = {8: DEFAULT_VIT, 16: "vit_base_patch16_224.augreg_in21k_ft_in1k"}

# The released checkpoint (the authors' PIPAL model, pyiqa's mirror): the one place that names it.
RELEASED_URL = "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/AHIQ_vit_p8_epoch33-da3ea303.pth"
RELEASED_NOTE = ("the clone's checkpoints/ahiq_pipal/, else the user cache: $AHIQ_HOME, else torch hub's "
                 "checkpoints folder, where it is downloaded on first use")
RELEASED_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "ahiq_pipal" / RELEASED_URL.rsplit("/", 1)[1]

# Architecture switches and their values; the first is the authors' (the default).
CHOICES = {"branches": ("both", "vit", "cnn"), "fusion": ("deform", "conv", "none"), "pooling": ("weighted", "mean")}
NORMALISATIONS = {
    "authors": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # (x - 0.5) / 0.5, the released checkpoint's
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # pyiqa's; other scores with the released heads
}
# Fields that choose how a layer is computed, not what the network is.
IMPLEMENTATION_ONLY = ("deform_impl",)
ARCH = "architecture"  # the --help group of the fields below


@dataclass(frozen=True)
class ModelConfig:
    """The architecture; every field is also an option of train.py, test.py and score.py."""

    vit: str = option(DEFAULT_VIT, "timm ViT name.tag", group=ARCH, defaults=dict.fromkeys(SCRIPTS),
                      shown=f"the patch size's tag: {VIT_BY_PATCH[8]} (8), {VIT_BY_PATCH[16]} (16)")
    vit_blocks: tuple[int, ...] = option(DEFAULT_VIT_BLOCKS, "1-based ViT blocks whose outputs are used, e.g. 1-5 or "
                                         "1,3,5", group=ARCH, parse=int_list, shown="1-5")
    cnn: str = option(DEFAULT_CNN, "timm ResNet name.tag", group=ARCH)
    cnn_stage: int = option(DEFAULT_CNN_STAGE, "ResNet stage (1 = layer1) whose block outputs are used", group=ARCH,
                            low=1, high=4)
    normalization: str = option("authors", "input normalisation: authors = (x-0.5)/0.5 (the released model); "
                                "imagenet = pyiqa's mean/std, which gives different scores", group=ARCH,
                                choices=tuple(NORMALISATIONS))
    deform_impl: str = option("sampled", "deformable conv: sampled (bilinear sampling + GEMM, faster) or "
                              "torchvision (the reference)", group=ARCH, choices=("sampled", "torchvision"))
    vit_kwargs: dict[str, Any] = option({}, 'timm keyword arguments that change the ViT, as JSON, e.g. \'{"depth": 2, '
                                        '"embed_dim": 32, "num_heads": 2}\' (ablations, fast tests; pretrained weights '
                                        'of the tag no longer fit)', group=ARCH, parse=json_dict)
    cnn_kwargs: dict[str, Any] = option({}, 'timm keyword arguments that change the ResNet, as JSON, e.g. '
                                        '\'{"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "stem_width": 16}\'',
                                        group=ARCH, parse=json_dict)
    head_kwargs: dict[str, int] = option({}, "widths of the score head, as JSON: channels (256), hidden (1024), "
                                         "smoothed (512)", group=ARCH, parse=json_dict)
    fusion_kwargs: dict[str, int] = option({}, "width of the deformable fusion, as JSON: hidden (512)", group=ARCH,
                                           parse=json_dict)
    branches: str = option("both", "both: ViT + CNN (the authors'); vit: ViT features only (with fusion none); "
                           "cnn: CNN features only, the deformable conv steered by the reference's own CNN features, "
                           "the score grid still the ViT patch grid", group=ARCH, choices=CHOICES["branches"])
    fusion: str = option("deform", "how the CNN features reach the ViT grid: deform = deformable 3x3 conv steered by "
                         "the reference (the authors'); conv = a plain 3x3 conv of the same shape; none = CNN features "
                         "only averaged onto the grid (no parameters)", group=ARCH, choices=CHOICES["fusion"])
    pooling: str = option("weighted", "weighted: score = sum(f*w)/sum(w) with the patch weight map w (the authors'); "
                          "mean: score = mean of the patch scores f (no weight branch)", group=ARCH,
                          choices=CHOICES["pooling"])

    def __post_init__(self):
        """Normalise and check every field and combination: a config that constructs also builds."""
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        for name in ("vit", "cnn"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise UserError(f"{arg(name)}{getattr(self, name)!r}: give a timm model name")
        put("vit_blocks", _ints(self.vit_blocks, "vit_blocks"))
        put("cnn_stage", _ints([self.cnn_stage], "cnn_stage")[0])
        put("vit_kwargs", _timm_kwargs(self.vit_kwargs, "vit_kwargs"))
        put("cnn_kwargs", _timm_kwargs(self.cnn_kwargs, "cnn_kwargs"))
        put("head_kwargs", _widths(self.head_kwargs, "head_kwargs", ("channels", "hidden", "smoothed")))
        put("fusion_kwargs", _widths(self.fusion_kwargs, "fusion_kwargs", ("hidden",)))
        check_choices(self)
        if self.branches == "vit" and self.fusion != "none":
            raise UserError(f"{arg('branches')}vit has no CNN features to fuse; set {arg('fusion')}none")
        if self.branches != "vit":
            patch = self.patch_size
            if patch is None:
                raise UserError(f"{arg('vit')}{self.vit}: no patchN in the name, so the score grid is unknown; "
                                "give a timm ViT name like vit_base_patch8_224")
            if not 1 <= self.cnn_stage <= 4 or patch % self.cnn_reduction or patch // self.cnn_reduction not in (1, 2, 4):
                raise UserError(f"{arg('cnn_stage')}{self.cnn_stage}: the CNN grid (1/{self.cnn_reduction}) must be "
                                f"1, 2 or 4 times the patch-{patch} grid (patch 8: stages 1-2, patch 16: stages 1-3)")

    @property
    def patch_size(self) -> int | None:
        """The ViT patch size, the score grid's cell: ``vit_kwargs['patch_size']``, else the timm name's ``patchN``."""
        if "patch_size" in self.vit_kwargs:
            return int(self.vit_kwargs["patch_size"])
        found = re.search(r"patch(\d+)", self.vit)
        return int(found.group(1)) if found else None

    @property
    def cnn_reduction(self) -> int:
        """How much the CNN stage shrinks the image: timm ResNet stages 1..4 reduce by 4, 8, 16, 32."""
        return 2 ** (self.cnn_stage + 1)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _ints(value: Any, name: str) -> tuple[int, ...]:
    try:
        if isinstance(value, (str, bytes)) or any(isinstance(v, bool) or int(v) != v for v in value):
            raise TypeError
        return tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"{arg(name)}{value!r}: give whole numbers") from None


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
            isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 65536 for v in value.values()):
        raise UserError(f"{arg(name)}{value!r}: give positive integer widths for {', '.join(known)}")
    return dict(sorted(value.items()))


def check_crop_size(crop: Any, name: str = "crop_size") -> int:
    """``crop`` when it is a positive multiple of :data:`CROP_MULTIPLE`, else a :class:`UserError` naming ``name``."""
    if isinstance(crop, bool) or not isinstance(crop, int) or crop <= 0 or crop % CROP_MULTIPLE:
        raise UserError(f"{arg(name)}{crop}: must be a positive multiple of {CROP_MULTIPLE}")
    return crop
