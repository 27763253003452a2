"""Frozen timm backbones that run only the layers AHIQ reads, and the ways to get their weights.

``ViTFeatures`` runs the patch embedding and the first transformer blocks of a timm ViT and returns the
selected blocks' token maps; ``ResNetFeatures`` runs the stem and one stage of a timm ResNet and returns
the outputs of that stage's blocks. Neither uses forward hooks, and neither runs a layer it does not need.

Weights come from one of three sources, a :class:`BackboneSource` (recorded in our checkpoints so a model
is rebuilt with the backbones it was trained on): timm's pretrained weights by tag (``checkpoints/backbones/``,
the Hugging Face hub cache, or the hub, asked only when it answers quickly), a local file with its SHA-256, or
random initialisation drawn from a recorded seed, which is announced.
"""
from __future__ import annotations

import hashlib
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, Sequence

import timm
import torch
import torch.nn as nn

from ahiq.models.hub import offline_variable, unreachable
from ahiq.models.config import DEFAULT_CNN, DEFAULT_CNN_STAGE, DEFAULT_VIT, DEFAULT_VIT_BLOCKS
from ahiq.models.state import state_dict_problems, summarise
from ahiq.utils.errors import UserError, arg, note
from ahiq.utils.inputs import reading
from ahiq.utils.io import load_torch_file

# Where download.sh puts backbone weights and where they are looked for when no file is named.
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "checkpoints" / "backbones"
WEIGHT_SUFFIXES = (".safetensors", ".npz", ".pth", ".bin")


class Features(Protocol):
    """What the network needs of a backbone: ``forward`` maps normalised images ``(B, 3, H, W)`` to features
    ``(B, out_channels, H / reduction, W / reduction)`` (NCHW). A new backbone family is one class with these."""

    out_channels: int
    reduction: int
    input_grad: bool

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


def find_local_weights(name: str, weights_dir: Path = DEFAULT_WEIGHTS_DIR) -> Path | None:
    """Return ``weights_dir/<name><suffix>`` for the first suffix that exists, else None."""
    for suffix in WEIGHT_SUFFIXES:
        path = weights_dir / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def cached_hub_weights(name: str) -> Path | None:
    """timm's weight file for ``name`` in the Hugging Face hub cache, else None (nothing is downloaded)."""
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(f"timm/{name}", filename)
        if isinstance(found, str):
            return Path(found)
    return None


def missing_pretrained(names: Sequence[str] = (DEFAULT_VIT, DEFAULT_CNN)) -> list[str]:
    """The backbones of ``names`` whose pretrained weights are not on this machine (backbones folder, hub cache)."""
    return [n for n in names if find_local_weights(n) is None and cached_hub_weights(n) is None]


def pretrained_available(names: Sequence[str] = (DEFAULT_VIT, DEFAULT_CNN)) -> bool:
    """Whether pretrained weights of every backbone ``names`` are on this machine (backbones folder or hub cache)."""
    return not missing_pretrained(names)


def hub_offline_reason(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be asked now (``HF_HUB_OFFLINE`` set, or its host does not answer a TCP
    connection within ``timeout`` seconds, through the proxy when one is set), or None when it can."""
    from huggingface_hub import constants

    set_offline = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else offline_variable(("HF_HUB_OFFLINE",))
    if set_offline:
        return set_offline
    reason = unreachable(constants.ENDPOINT, timeout)
    return reason and f"the hub: {reason}"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class BackboneSource:
    """Where a backbone's weights come from; stored in our checkpoints, so their backbones can be rebuilt.

    ``kind``: ``timm`` (pretrained weights of the timm tag ``name``), ``file`` (a local weight file ``file``
    with its ``sha256``) or ``random`` (timm's initialisation drawn after ``torch.manual_seed(seed)``).
    """

    kind: str
    name: str
    file: str | None = None
    sha256: str | None = None
    seed: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BackboneSource":
        return cls(**{k: data.get(k) for k in ("kind", "name", "file", "sha256", "seed")})

    def same_weights(self, other: "BackboneSource") -> bool:
        """Whether both give the same tensors (files compared by content, not by path)."""
        if self.kind != other.kind or self.name != other.name:
            return False
        if self.kind == "file":
            return self.sha256 == other.sha256
        return self.kind != "random" or self.seed == other.seed

    def describe(self) -> str:
        if self.kind == "file":
            return f"file {self.file} (sha256 {str(self.sha256)[:12]}...)"
        if self.kind == "random":
            return f"{self.name} random init (seed {self.seed})"
        return f"{self.name} pretrained (timm tag)"


def backbone_source(name: str, pretrained: bool, weights_file: str | Path | None = None, seed: int = 0) -> BackboneSource:
    """The :class:`BackboneSource` the arguments ask for: ``weights_file`` (hashed) wins, else the timm tag
    ``name`` pretrained, else random init from ``seed``."""
    if weights_file is not None:
        path = Path(weights_file)
        if not path.is_file():
            raise UserError(f"{path}: backbone weight file not found; check the path or run `sh download.sh`")
        reading(path)
        return BackboneSource("file", name, str(path), file_sha256(path))
    return BackboneSource("timm", name) if pretrained else BackboneSource("random", name, seed=int(seed))


def backbone_sources(vit: str, cnn: str, pretrained: bool = True, vit_weights: str | None = None,
                     cnn_weights: str | None = None, seed: int | None = None) -> dict[str, BackboneSource]:
    """``{"vit": ..., "cnn": ...}`` as the arguments ask. Random backbones without a ``seed`` get one drawn from
    torch's global generator (so ``torch.manual_seed`` before still decides them), and it is recorded."""
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, (), device="cpu").item())  # CPU even under a meta-device scope
    return {"vit": backbone_source(vit, pretrained, vit_weights, seed),
            "cnn": backbone_source(cnn, pretrained, cnn_weights, seed)}


def check_available(sources: Sequence[BackboneSource], weights_args: Sequence[str] = ()) -> None:
    """Stop within seconds, before anything is built, when pretrained weights are neither on this machine
    (``checkpoints/backbones/``, hub cache) nor obtainable from the hub: one line naming every way forward."""
    missing = [s.name for s in sources
               if s.kind == "timm" and find_local_weights(s.name) is None and cached_hub_weights(s.name) is None]
    if not missing:
        return
    reason = hub_offline_reason()
    if reason is None:
        return
    files = " / ".join(f"{arg(a)}FILE" for a in weights_args) or "local weight files"
    raise UserError(
        f"cannot get pretrained weights for {', '.join(missing)}: {reason}, and they are neither in "
        f"{DEFAULT_WEIGHTS_DIR} nor in the Hugging Face hub cache. Ways forward: run `sh download.sh` while online; "
        f"give {files}; fill the hub cache (HF_HOME) on a machine that is online; or {arg('pretrained_backbones')}"
        "false (random backbones, to try the pipeline)")


def _load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
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
    reading(path)
    if path.suffix == ".npz":
        if not hasattr(model, "load_pretrained"):
            raise UserError(f"{path}: .npz weights are only for timm ViTs; give a .pth or .safetensors file")
        try:
            model.load_pretrained(str(path))
        except (KeyError, ValueError, IndexError, OSError, RuntimeError) as err:  # kinds of a malformed npz in timm
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
            f"put the file at {DEFAULT_WEIGHTS_DIR}/{name}.safetensors{where}, fill the Hugging Face hub cache, "
            f"or use {arg('pretrained_backbones')}false (random backbones)")


def create_backbone(source: BackboneSource, weights_arg: str = "", **kwargs) -> nn.Module:
    """Build the timm model ``source.name`` (``arch.tag``) with the weights ``source`` names.

    ``timm``: a file in ``checkpoints/backbones/<name>.*`` if present, else the hub cache's copy, else the hub
    (asked only after :func:`check_available`). ``random``: timm's initialisation drawn from ``source.seed``
    without touching the global random state, and a line on stderr says so. ``weights_arg`` names the
    argument that takes a weight file, for messages.
    """
    name = source.name
    changed = {k: v for k, v in kwargs.items() if k != "dynamic_img_size"}  # the user's changes, for messages
    try:
        weights_file = source.file if source.kind == "file" else None
        if source.kind == "timm":
            weights_file = find_local_weights(name)
        if weights_file is not None:
            model = _uninitialised(name, **kwargs) if Path(weights_file).suffix != ".npz" else None
            model = model or timm.create_model(name, pretrained=False, **kwargs)
            load_weights_file(model, weights_file)
            return model
        if source.kind == "random":
            note(f"note: {name} has RANDOM weights (seed {source.seed}); scores are not meaningful quality "
                 "predictions")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(source.seed or 0))
                return timm.create_model(name, pretrained=False, **kwargs)
        check_available([source], [weights_arg] if weights_arg else [])
        cached = cached_hub_weights(name)
        try:
            if cached is not None:  # no network at all
                return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(cached)}, **kwargs)
            return timm.create_model(name, pretrained=True, **kwargs)
        except RuntimeError as err:
            if "Unknown model" in str(err) or "Invalid pretrained tag" in str(err):
                raise
            if "size mismatch" not in str(err):
                raise UserError(_no_weights(name, weights_arg, err)) from None
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
        self.patch_size = self.reduction = int(model.patch_embed.patch_size[0])
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


def build_vit(source: BackboneSource, blocks: Sequence[int], **timm_kwargs) -> ViTFeatures:
    """A :class:`ViTFeatures` for the timm model and weights ``source`` names (see :func:`create_backbone`);
    ``timm_kwargs`` change the architecture (e.g. ``depth``, ``embed_dim``, ``num_heads``)."""
    model = create_backbone(source, weights_arg="vit_weights", dynamic_img_size=True, **timm_kwargs)
    return ViTFeatures(model, blocks)


def build_resnet(source: BackboneSource, stage: int, **timm_kwargs) -> "ResNetFeatures":
    """A :class:`ResNetFeatures` for the timm model and weights ``source`` names (see :func:`create_backbone`);
    ``timm_kwargs`` change the architecture (e.g. ``layers``, ``channels``, ``stem_width``)."""
    return ResNetFeatures(create_backbone(source, weights_arg="cnn_weights", **timm_kwargs), stage)


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
