"""The one scoring flow of score.py and test.py: seed -> model (architecture overrides) -> optional compile ->
score pairs -> quality maps."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from data.images import read_image
from data.records import result_names
from engine.device import resolve_device
from engine.scoring import PairScore, score_pairs
from models.ahiq import AHIQ
from models.checkpoint import load_model, read_checkpoint
from utils.io import unique_file_names
from utils.visual import save_quality_map


def open_checkpoint(checkpoint: str | None) -> tuple[dict, dict, dict] | None:
    """``read_checkpoint(checkpoint)`` (read once, before the pairs are screened), or None without one."""
    return read_checkpoint(checkpoint) if checkpoint else None


def training_crop_size(contents: tuple[dict, dict, dict] | None, default: int = 224) -> int:
    """The crop size a checkpoint of ours was trained with (its stored options), else ``default``."""
    options = (contents[2].get("options") or {}) if contents else {}
    return int(options.get("crop_size") or default)


def describe_backbones(model: AHIQ) -> str:
    """Where the model's backbone weights came from, for the line scripts print before scoring."""
    return "; ".join(f"{part} {source.describe()}" for part, source in model.backbone_sources.items())


def prepare_model(checkpoint: str | None, *, vit_weights: str | None = None, cnn_weights: str | None = None,
                  pretrained_backbones: bool | None = None, backbone_seed: int | None = None, device: str = "auto",
                  seed: int = 1919, compile: bool = False, overrides: dict | None = None,
                  contents: tuple[dict, dict, dict] | None = None) -> tuple[AHIQ, torch.device]:
    """``(the AHIQ model, device)``: heads from ``checkpoint``, ``overrides`` of its architecture,
    the backbones it records unless the weight arguments ask for others (see :func:`load_model`).

    The seed is set first, so random heads (no checkpoint) are the same on every run; random backbones come
    from the checkpoint's recorded seed, else ``backbone_seed`` (the trainer's choice too: ``--seed``). With
    ``compile`` the backbones, the fusion and the head are compiled in place, so that scoring with a reference's
    side reused (``encode_reference``/``score_distorted``) runs compiled too.
    ``contents``: the checkpoint as :func:`open_checkpoint` read it.
    """
    where = resolve_device(device)
    torch.manual_seed(seed)
    model = load_model(checkpoint, vit_weights=vit_weights, cnn_weights=cnn_weights,
                       pretrained_backbones=pretrained_backbones, default_seed=backbone_seed, device=where,
                       contents=contents, **(overrides or {}))
    if compile:
        for part in (model.vit, model.cnn, model.deform_net, model.regressor):
            part.compile()
    return model, where


def score_and_map(model: AHIQ, pairs: Sequence[tuple[Path, Path]], *, crops: str, crop_size: int, seed: int,
                  batch_size: int, precision: str, num_workers: int = 0, maps_dir: str | None = None,
                  flip_tta: bool = False, progress: bool = True, names: Sequence[str] | None = None) -> list[PairScore]:
    """Score every pair (in order) and, with ``maps_dir``, write one quality-map picture per pair there, named
    after ``names`` (default :func:`result_names`) so that no two pairs share a file."""
    results = list(score_pairs(model, pairs, crops, crop_size, seed, batch_size, precision, num_workers,
                               with_maps=bool(maps_dir), progress=progress, flip_tta=flip_tta))
    if maps_dir:
        names = list(names) if names is not None else result_names([d for d, _ in pairs])
        for r, name, file in zip(results, names, unique_file_names(names, ".png")):
            save_quality_map(read_image(r.dist), r.score_map, r.weight_map, Path(maps_dir) / file,
                             title=f"AHIQ score {r.score:.4f}  (reference {Path(r.ref).name})", name=name)
    return results
