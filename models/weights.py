"""Where backbone weights come from (:class:`BackboneSource`: a timm tag, a file with its SHA-256, or a seed), the
timm model built with them (:func:`create_backbone`), and whether the network can be asked (:func:`unreachable`)."""
from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import timm
import torch
import torch.nn as nn

from ahiq.models.config import DEFAULT_CNN, DEFAULT_VIT
from ahiq.utils.errors import UserError, arg, note
from ahiq.utils.io import existing_file, load_torch_file

# Where download.sh puts backbone weights, looked for when no file is named.
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "checkpoints" / "backbones"
WEIGHT_SUFFIXES = (".safetensors", ".npz", ".pth", ".bin")


def state_dict_problems(own: dict[str, torch.Tensor], given: dict[str, torch.Tensor], prefix: str = "") -> list[str]:
    """Every way ``given`` does not fit ``own``: missing and unexpected keys, shape mismatches (empty if it fits)."""
    problems = [f"{prefix}{k} missing" for k in own if k not in given]
    problems += [f"{prefix}{k} unexpected" for k in given if k not in own]
    problems += [f"{prefix}{k} has shape {tuple(given[k].shape)}, expected {tuple(v.shape)}"
                 for k, v in own.items() if k in given and tuple(given[k].shape) != tuple(v.shape)]
    return problems


def summarise(problems: list[str], shown: int = 6) -> str:
    """The first ``shown`` problems and how many more, for a one-line message."""
    more = f" and {len(problems) - shown} more" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more


def find_local_weights(name: str, weights_dir: Path = DEFAULT_WEIGHTS_DIR) -> Path | None:
    """``weights_dir/<name><suffix>`` for the first suffix that exists, else None."""
    return next((p for p in (weights_dir / f"{name}{s}" for s in WEIGHT_SUFFIXES) if p.is_file()), None)


def cached_hub_weights(name: str) -> Path | None:
    """timm's weight file for ``name`` in the Hugging Face hub cache, else None (nothing is downloaded)."""
    from huggingface_hub import try_to_load_from_cache

    found = (try_to_load_from_cache(f"timm/{name}", f) for f in ("model.safetensors", "pytorch_model.bin"))
    return next((Path(f) for f in found if isinstance(f, str)), None)


def missing_pretrained(names: Sequence[str] = (DEFAULT_VIT, DEFAULT_CNN)) -> list[str]:
    """The backbones of ``names`` whose pretrained weights are not on this machine (backbones folder, hub cache)."""
    return [n for n in names if find_local_weights(n) is None and cached_hub_weights(n) is None]


def offline_variable(names: tuple[str, ...] = ("AHIQ_OFFLINE", "HF_HUB_OFFLINE")) -> str | None:
    """``"NAME is set"`` for the first of the environment variables ``names`` set to a true value (never download)."""
    true = ("1", "true", "yes", "on")
    return next((f"{name} is set" for name in names if os.environ.get(name, "").strip().lower() in true), None)


@lru_cache(maxsize=None)
def unreachable(endpoint: str, timeout: float) -> str | None:
    """Why ``endpoint``'s host (or proxy) takes no TCP connection within ``timeout`` s, or None (in a thread: without a
    network the look-up can block far longer)."""
    url = urllib.parse.urlparse(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_url = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_url.hostname or "", proxy_url.port or 80
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(err)

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    if not outcome:
        return f"{host}:{port} did not answer within {timeout:.0f}s"
    if outcome[0] is not None:
        return f"{host}:{port} cannot be reached ({type(outcome[0]).__name__})"
    return None


def hub_offline_reason() -> str | None:
    """Why the Hugging Face hub cannot be asked now, or None."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or offline_variable(("HF_HUB_OFFLINE",)):
        return "HF_HUB_OFFLINE is set"
    reason = unreachable(constants.ENDPOINT, 3.0)
    return reason and f"the hub: {reason}"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class BackboneSource:
    """Where a backbone's weights come from: ``kind`` ``timm`` (the tag ``name``), ``file`` (``file`` and its
    ``sha256``) or ``random`` (timm's init after ``torch.manual_seed(seed)``)."""

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
        """Whether both give the same tensors (files compared by content)."""
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


def drawn_seed() -> int:
    """A seed for random backbones drawn from torch's CPU generator (the CPU one even when building on meta)."""
    return int(torch.randint(0, 2**31 - 1, (), device="cpu").item())


def backbone_source(name: str, pretrained: bool, weights_file: str | Path | None = None, seed: int = 0) -> BackboneSource:
    """The source asked for: ``weights_file`` (hashed), else the tag ``name`` pretrained, else random from ``seed``."""
    if weights_file is not None:
        path = existing_file(weights_file, "backbone weight file", "check the path or run `sh download.sh`")
        return BackboneSource("file", name, str(path), file_sha256(path))
    return BackboneSource("timm", name) if pretrained else BackboneSource("random", name, seed=int(seed))


def check_available(sources: Sequence[BackboneSource], weights_args: Sequence[str] = ()) -> None:
    """Before anything is built, a :class:`UserError` when pretrained weights are neither here nor obtainable."""
    missing = missing_pretrained([s.name for s in sources if s.kind == "timm"])
    reason = hub_offline_reason() if missing else None
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
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise UserError(f"{path}: holds no state dict; give a .pth/.bin state dict, .safetensors or .npz file")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_npz(model: nn.Module, path: Path) -> None:
    if not hasattr(model, "load_pretrained"):
        raise UserError(f"{path}: .npz weights are only for timm ViTs; give a .pth or .safetensors file")
    try:
        model.load_pretrained(str(path))
    except (KeyError, ValueError, IndexError, OSError, RuntimeError) as err:  # kinds of a malformed npz in timm
        if "allow_pickle" in str(err):  # object arrays: numpy refuses to unpickle them, and so do we
            raise UserError(f"{path}: holds Python objects other than tensors; refusing to unpickle it "
                            "(see README, Security)") from None
        raise UserError(f"{path}: not a JAX ViT .npz for this model ({type(err).__name__}: {err})") from None


def load_weights_file(model: nn.Module, path: str | Path) -> None:
    """Load a local weight file into a whole timm model (strict): ``.npz``, ``.safetensors``, ``.pth``, ``.bin``."""
    path = existing_file(path, "backbone weight file", "check the path or run `sh download.sh`")
    if path.suffix == ".npz":
        return _load_npz(model, path)
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


def _from_file(name: str, path: str | Path, **kwargs) -> nn.Module:
    """The model with ``path``'s weights, built on the meta device where the state dict fills it (random init of
    ViT-B/8 costs seconds)."""
    model = None
    if Path(path).suffix != ".npz":
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False, **kwargs)
        model = None if {k for k, _ in model.named_buffers()} - set(model.state_dict()) else model.to_empty(device="cpu")
    model = model or timm.create_model(name, pretrained=False, **kwargs)
    load_weights_file(model, path)
    return model


def _unknown_name(err: Exception) -> bool:
    return "Unknown model" in str(err) or "Invalid pretrained tag" in str(err)


def _pretrained(name: str, weights_arg: str, changed: dict, **kwargs) -> nn.Module:
    """timm's pretrained model: the hub cache's copy, else the hub's."""
    cached = cached_hub_weights(name)
    overlay = {} if cached is None else {"pretrained_cfg_overlay": {"file": str(cached)}}
    try:
        return timm.create_model(name, pretrained=True, **overlay, **kwargs)
    except (RuntimeError, OSError, ValueError) as err:
        if isinstance(err, RuntimeError) and _unknown_name(err):
            raise
        if "size mismatch" in str(err):
            raise UserError(f"{name}: its pretrained weights do not fit the architecture changed by {changed}; "
                            f"use {arg('pretrained_backbones')}false or a weight file made for it") from None
        where = f" or give {arg(weights_arg)}FILE" if weights_arg else ""
        raise UserError(f"cannot get pretrained weights for {name} ({type(err).__name__}); run `sh download.sh` "
                        f"online, put the file at {DEFAULT_WEIGHTS_DIR}/{name}.safetensors{where}, fill the Hugging "
                        f"Face hub cache, or use {arg('pretrained_backbones')}false (random backbones)") from None


def create_backbone(source: BackboneSource, weights_arg: str = "", **kwargs) -> nn.Module:
    """The timm model ``source.name`` with ``source``'s weights (random ones without touching the global random state);
    ``weights_arg``: the argument that takes a weight file, for messages."""
    name = source.name
    changed = {k: v for k, v in kwargs.items() if k != "dynamic_img_size"}  # the user's changes, for messages
    try:
        weights_file = source.file if source.kind == "file" else None
        if source.kind == "timm":
            weights_file = find_local_weights(name)
        if weights_file is not None:
            return _from_file(name, weights_file, **kwargs)
        if source.kind == "random":
            note(f"note: {name} has RANDOM weights (seed {source.seed}); scores are not meaningful quality predictions")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(source.seed or 0))
                return timm.create_model(name, pretrained=False, **kwargs)
        check_available([source], [weights_arg] if weights_arg else [])
        return _pretrained(name, weights_arg, changed, **kwargs)
    except RuntimeError as err:
        if _unknown_name(err):
            raise UserError(f"{name}: not a timm model name/tag ({err})") from None
        raise
    except TypeError as err:  # a keyword argument the timm model does not take
        if "keyword argument" not in str(err):
            raise
        raise UserError(f"{name} with {changed}: {err}; check the timm keyword arguments") from None
