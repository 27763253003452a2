"""Frozen timm backbones that run only the layers AHIQ reads, and the ways to get their weights.

``ViTFeatures`` runs the patch embedding and the first transformer blocks of a timm ViT and returns the
selected blocks' token maps; ``ResNetFeatures`` runs the stem and one stage of a timm ResNet and returns
the outputs of that stage's blocks. Neither uses forward hooks, and neither runs a layer it does not need.

Weights come from one of three sources (see :func:`create_timm_model`): a local file, timm's pretrained
weights by tag (Hugging Face hub or its local cache), or random initialisation, which is announced.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import timm
import torch
import torch.nn as nn

from models.state import state_dict_problems, summarise
from utils.errors import UserError, arg
from utils.io import load_torch_file

DEFAULT_VIT = "vit_base_patch8_224.augreg_in21k_ft_in1k"
DEFAULT_CNN = "resnet50.a1_in1k"
DEFAULT_VIT_BLOCKS = (1, 2, 3, 4, 5)
DEFAULT_CNN_STAGE = 1
# Where download.sh puts backbone weights and where they are looked for when no file is named.
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "checkpoints" / "backbones"
WEIGHT_SUFFIXES = (".safetensors", ".npz", ".pth", ".bin")


def find_local_weights(name: str, weights_dir: Path = DEFAULT_WEIGHTS_DIR) -> Path | None:
    """Return ``weights_dir/<name><suffix>`` for the first suffix that exists, else None."""
    for suffix in WEIGHT_SUFFIXES:
        path = weights_dir / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def pretrained_available(names: Sequence[str] = (DEFAULT_VIT, DEFAULT_CNN)) -> bool:
    """Whether pretrained weights of every backbone ``names`` are on this machine (backbones folder or hub cache)."""
    from huggingface_hub import try_to_load_from_cache

    def cached(name: str) -> bool:
        return any(isinstance(try_to_load_from_cache(f"timm/{name}", f), str)
                   for f in ("model.safetensors", "pytorch_model.bin"))

    return all(find_local_weights(n) is not None or cached(n) for n in names)


def _load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own error type for damaged files
            raise UserError(f"{path}: not a readable .safetensors file ({err}); re-download it") from None
    state = load_torch_file(path, "backbone weight file")
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise UserError(f"{path}: holds no state dict; give a .pth/.bin state dict, .safetensors or .npz file")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights_file(model: nn.Module, path: str | Path) -> None:
    """Load a local weight file into a whole timm model (strict): ``.npz``, ``.safetensors``, ``.pth``, ``.bin``."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a backbone weight file; give the file inside it")
    if not path.is_file():
        raise UserError(f"{path}: backbone weight file not found; check the path or run `sh download.sh`")
    if path.suffix == ".npz":
        if not hasattr(model, "load_pretrained"):
            raise UserError(f"{path}: .npz weights are only for timm ViTs; give a .pth or .safetensors file")
        try:
            model.load_pretrained(str(path))
        except Exception as err:  # a malformed npz raises KeyError/ValueError deep in timm
            if "allow_pickle" in str(err):  # object arrays: numpy refuses to unpickle them, and so do we
                raise UserError(f"{path}: holds Python objects other than tensors; refusing to unpickle it "
                                "(see README, Security)") from None
            raise UserError(f"{path}: not a JAX ViT .npz for this model ({type(err).__name__}: {err})") from None
        return
    if path.suffix not in WEIGHT_SUFFIXES:
        raise UserError(f"{path}: unknown weight file type; use .safetensors, .npz, .pth or .bin")
    state = _load_state_dict_file(path)
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, model)
    problems = state_dict_problems(model.state_dict(), state)
    if problems:
        raise UserError(f"{path}: weights do not fit {type(model).__name__} ({summarise(problems)}); "
                        "is it the right backbone?")
    model.load_state_dict(state, strict=True)


def _uninitialised(name: str, **kwargs) -> nn.Module | None:
    """The model with storage but no initialisation (built on the meta device): random init of ViT-B/8 costs
    seconds and is overwritten by a state dict anyway. None when a buffer would not come from the state dict.
    Only for state-dict files, whose strict check proves every tensor is then overwritten."""
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **kwargs)
    if {k for k, _ in model.named_buffers()} - set(model.state_dict()):
        return None
    return model.to_empty(device="cpu")


def _no_weights(name: str, weights_arg: str, err: Exception) -> str:
    where = f" or give {arg(weights_arg)}FILE" if weights_arg else ""
    return (f"cannot get pretrained weights for {name} ({type(err).__name__}); run `sh download.sh` online, "
            f"put the file at {DEFAULT_WEIGHTS_DIR}/{name}.safetensors{where}, or fill the Hugging Face hub "
            "cache (HF_HUB_OFFLINE=1 uses it offline)")


def create_timm_model(
    name: str, pretrained: bool, weights_file: str | Path | None = None, weights_arg: str = "", **kwargs
) -> nn.Module:
    """Build a timm model by ``name`` (``arch.tag``) with weights from a file, the hub, or random init.

    ``weights_file`` wins; else with ``pretrained`` a file in ``checkpoints/backbones/<name>.*`` is used if
    present, else timm's pretrained weights (hub or hub cache). Without ``pretrained`` the weights are
    random and a line on stderr says so. ``weights_arg`` names the argument that takes a weight file.
    """
    try:
        if weights_file is None and pretrained:
            weights_file = find_local_weights(name)
        if weights_file is not None:
            model = _uninitialised(name, **kwargs) if Path(weights_file).suffix != ".npz" else None
            model = model or timm.create_model(name, pretrained=False, **kwargs)
            load_weights_file(model, weights_file)
            return model
        if not pretrained:
            print(f"note: {name} has RANDOM weights (pretrained_backbones off); scores are not meaningful "
                  "quality predictions", file=sys.stderr)
            return timm.create_model(name, pretrained=False, **kwargs)
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except RuntimeError as err:
            if "size mismatch" not in str(err):
                raise UserError(_no_weights(name, weights_arg, err)) from None
            changed = {k: v for k, v in kwargs.items() if k != "dynamic_img_size"}
            raise UserError(f"{name}: its pretrained weights do not fit the architecture changed by {changed}; "
                            f"use {arg('pretrained_backbones')}false or a weight file made for it") from None
        except (OSError, ValueError) as err:
            raise UserError(_no_weights(name, weights_arg, err)) from None
    except RuntimeError as err:
        if "Unknown model" in str(err) or "Invalid pretrained tag" in str(err):
            raise UserError(f"{name}: not a timm model name/tag ({err})") from None
        raise
    except TypeError as err:  # a keyword argument the timm model does not take
        if "keyword argument" not in str(err):
            raise
        changed = {k: v for k, v in kwargs.items() if k != "dynamic_img_size"}
        raise UserError(f"{name} with {changed}: {err}; check the timm keyword arguments") from None


class _FrozenBackbone(nn.Module):
    """Base for backbones that stay in eval mode and hold no trainable parameters.

    By default they build no graph (``torch.no_grad``): scoring and training the heads need none. With
    ``input_grad = True`` they run under the caller's grad mode, so a loss on the score reaches the input
    images (the weights still get no gradient); AHIQ-as-a-loss sets it.
    """

    input_grad: bool = False

    def _freeze(self) -> None:
        self.requires_grad_(False)
        self.eval()

    def _grad_mode(self) -> torch.set_grad_enabled:
        return torch.set_grad_enabled(self.input_grad and torch.is_grad_enabled())

    def train(self, mode: bool = True) -> "_FrozenBackbone":
        return super().train(False)


class ViTFeatures(_FrozenBackbone):
    """Token maps of selected transformer blocks of a timm ViT, computed without running later blocks.

    Input ``(B, 3, H, W)`` normalised images (H, W multiples of the patch size); output
    ``(B, len(blocks) * D, H / p, W / p)``: for each selected block (1-based, in order) its output tokens
    without the prefix (class) tokens, laid out row-major as the patch grid. Default: blocks 1-5 of
    ViT-B/8, ``(B, 3840, H/8, W/8)``. Crops other than 224 use timm's resampled position embedding.
    """

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
        self.indices = [b - 1 for b in blocks]  # timm counts blocks from 0
        # Later blocks, the final norm and the head are never run: drop them.
        model.prune_intermediate_layers(self.indices, prune_norm=True, prune_head=True)
        self.model = model
        self.blocks = blocks
        self.patch_size = int(model.patch_embed.patch_size[0])
        self.embed_dim = int(model.embed_dim)
        self.out_channels = self.embed_dim * len(blocks)
        self._freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._grad_mode():
            maps = self.model.forward_intermediates(x, indices=self.indices, stop_early=True, intermediates_only=True,
                                                    output_fmt="NCHW")
            return torch.cat(maps, dim=1)  # (B, len(blocks)*D, h, w), the authors' channel order

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them (timm's own
        activation checkpointing, which ``forward_intermediates`` honours); only matters with ``input_grad``."""
        self.model.set_grad_checkpointing(enable)


def build_vit(name: str, blocks: Sequence[int], pretrained: bool, weights_file: str | Path | None = None,
              **timm_kwargs) -> ViTFeatures:
    """A :class:`ViTFeatures` for the timm model ``name`` with weights as in :func:`create_timm_model`;
    ``timm_kwargs`` change the architecture (e.g. ``depth``, ``embed_dim``, ``num_heads``)."""
    model = create_timm_model(name, pretrained, weights_file, weights_arg="vit_weights", dynamic_img_size=True,
                              **timm_kwargs)
    return ViTFeatures(model, blocks)


def build_resnet(name: str, stage: int, pretrained: bool, weights_file: str | Path | None = None,
                 **timm_kwargs) -> "ResNetFeatures":
    """A :class:`ResNetFeatures` for the timm model ``name`` with weights as in :func:`create_timm_model`;
    ``timm_kwargs`` change the architecture (e.g. ``layers``, ``channels``, ``stem_width``)."""
    return ResNetFeatures(create_timm_model(name, pretrained, weights_file, weights_arg="cnn_weights", **timm_kwargs),
                          stage)


class ResNetFeatures(_FrozenBackbone):
    """Outputs of every block of one stage of a timm ResNet, after the stem, concatenated on channels.

    Input ``(B, 3, H, W)``; output ``(B, n_blocks * C, H / r, W / r)`` with ``r`` the stage's reduction.
    Default: the 3 bottlenecks of ResNet-50 ``layer1``, ``(B, 768, H/4, W/4)``.
    """

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
        self._freeze()

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
