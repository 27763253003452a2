"""Read and write AHIQ checkpoints, and build a ready model from one (:func:`load_model`).

Formats read:

(a) the authors' release: ``{'regressor_model_state_dict', 'deform_net_model_state_dict', 'epoch',
    'optimizer_state_dict', 'scheduler_state_dict', 'loss'}`` (only the two model dicts are used);
(b) pyiqa's mirror: the same dicts, or one flat state dict with ``deform_net.`` / ``regressor.`` keys,
    possibly nested under ``params`` (backbone tensors in it are ignored: backbones come from timm);
(c) ours: format (a) plus ``ahiq`` metadata (model config, backbone names/tags, score normalisation,
    options), so the authors' code and pyiqa load our files too.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from models.ahiq import AHIQ, ModelConfig, build_ahiq
from models.state import state_dict_problems, summarise
from utils.errors import UserError, arg
from utils.io import atomic_torch_save, load_torch_file

DEFORM_KEY = "deform_net_model_state_dict"
REGRESSOR_KEY = "regressor_model_state_dict"
META_KEY = "ahiq"
FORMAT_VERSION = 1


def read_checkpoint(path: str | Path) -> tuple[dict, dict, dict]:
    """Return ``(deform_net_state, regressor_state, metadata)`` from any supported checkpoint file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: checkpoint not found; give {arg('checkpoint')}FILE (`sh download.sh` fetches the "
                        "released one)")
    raw = load_torch_file(path, "PyTorch checkpoint")
    state = raw
    for key in ("params", "params_ema", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict) and DEFORM_KEY not in state:
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"{path}: not an AHIQ checkpoint (holds a {type(state).__name__}, not a dict)")
    meta = raw.get(META_KEY, {}) if isinstance(raw, dict) else {}
    version = (meta or {}).get("format_version", FORMAT_VERSION) if isinstance(meta, dict) else FORMAT_VERSION
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(f"{path}: written in checkpoint format {version}, newer than this code reads "
                        f"({FORMAT_VERSION}); update this project (git pull) to load it")
    if DEFORM_KEY in state and REGRESSOR_KEY in state:
        return dict(state[DEFORM_KEY]), dict(state[REGRESSOR_KEY]), dict(meta or {})
    deform, regressor = {}, {}
    for key, value in state.items():
        key = key.removeprefix("module.").removeprefix("net.")
        if key.startswith("deform_net."):
            deform[key.removeprefix("deform_net.")] = value
        elif key.startswith("regressor."):
            regressor[key.removeprefix("regressor.")] = value
    if not deform or not regressor:
        shown = ", ".join(list(map(str, state))[:5])
        raise UserError(f"{path}: not an AHIQ checkpoint (no {DEFORM_KEY}/{REGRESSOR_KEY} and no deform_net./"
                        f"regressor. tensors; keys: {shown}); give the released AHIQ file or one of ours")
    return deform, regressor, dict(meta or {})


def _check_and_load(module: nn.Module, state: dict, what: str) -> list[str]:
    problems = state_dict_problems(module.state_dict(), state, f"{what}.")
    if not problems:
        module.load_state_dict(state, strict=True)
    return problems


def load_heads(model: AHIQ, deform: dict, regressor: dict, path: str | Path = "checkpoint") -> None:
    """Load fusion and head tensors strictly; one :class:`UserError` lists every mismatch."""
    path = Path(path)
    problems = _check_and_load(model.deform_net, deform, "deform_net")
    problems += _check_and_load(model.regressor, regressor, "regressor")
    if problems:
        raise UserError(f"{path}: tensors do not fit this AHIQ network ({summarise(problems, 12)}); check "
                        f"{arg('vit')}, {arg('vit_blocks')}, {arg('cnn')}, {arg('cnn_stage')}, {arg('branches')}, "
                        f"{arg('fusion')}, {arg('pooling')}against the checkpoint")


def checkpoint_dict(model: AHIQ, extra_meta: dict | None = None, **training_state: Any) -> dict:
    """Our checkpoint: the authors' two dict names, their other keys when given, plus ``ahiq`` metadata."""
    meta = {"format_version": FORMAT_VERSION, "model_config": model.config.to_dict()}
    meta.update(extra_meta or {})
    ckpt = {
        DEFORM_KEY: {k: v.detach().cpu() for k, v in model.deform_net.state_dict().items()},
        REGRESSOR_KEY: {k: v.detach().cpu() for k, v in model.regressor.state_dict().items()},
        META_KEY: meta,
    }
    ckpt.update(training_state)
    return ckpt


def save_checkpoint(path: str | Path, model: AHIQ, extra_meta: dict | None = None, **training_state: Any) -> None:
    """Write :func:`checkpoint_dict` atomically (temporary file, then rename)."""
    atomic_torch_save(checkpoint_dict(model, extra_meta, **training_state), path)


def load_model(checkpoint: str | Path | None = None, *, vit_weights: str | None = None,
               cnn_weights: str | None = None, pretrained_backbones: bool = True, device: str | torch.device = "cpu",
               config: ModelConfig | None = None, **config_overrides: Any) -> AHIQ:
    """A ready AHIQ model in eval mode: architecture from the checkpoint's metadata (or ``config``), heads
    from ``checkpoint``, backbones by timm tag (hub / hub cache / ``checkpoints/backbones``) or local files.

    Scoring from Python is two lines::

        model = load_model("checkpoints/ahiq_pipal/AHIQ_vit_p8_epoch33.pth")
        score = model(dist, ref)   # (B, 3, 224, 224) in [0, 1] -> (B,)

    Without a checkpoint the fusion and head are random (a warning says so). The checkpoint's metadata
    (empty for the authors' file) is kept as ``model.checkpoint_meta``.
    """
    deform = regressor = None
    meta: dict = {}
    if checkpoint is not None:
        deform, regressor, meta = read_checkpoint(checkpoint)
        if config is None and "model_config" in meta:
            config = ModelConfig.from_dict(meta["model_config"])
    config = config or ModelConfig()
    if config_overrides:
        config = ModelConfig.from_dict({**config.to_dict(), **config_overrides})
    model = build_ahiq(config, pretrained_backbones, vit_weights, cnn_weights)
    if checkpoint is None:
        print("note: no checkpoint: fusion and head have RANDOM weights", file=sys.stderr)
    else:
        load_heads(model, deform, regressor, checkpoint)
    model.checkpoint_meta = meta  # score normalisation, options, split of the run that wrote it
    return model.to(device).eval()
