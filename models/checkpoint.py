"""Read and write AHIQ checkpoints (the authors', pyiqa's flat ``params``, ours: the authors' plus ``ahiq``
metadata), find the released one (:func:`released_checkpoint`), and build a ready model from one (:func:`load_model`)."""
from __future__ import annotations

import math
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ahiq.models.ahiq import AHIQ, build_ahiq, check_architecture
from ahiq.models.config import RELEASED_CHECKPOINT, RELEASED_URL, ModelConfig, check_crop_size
from ahiq.models.weights import (BackboneSource, backbone_source, drawn_seed, missing_pretrained, offline_variable,
                                 state_dict_problems, summarise, unreachable)
from ahiq.utils.device import resolve_device
from ahiq.utils.errors import UserError, arg, note
from ahiq.utils.io import atomic_torch_save, existing_file, load_torch_file

DEFORM_KEY = "deform_net_model_state_dict"
REGRESSOR_KEY = "regressor_model_state_dict"
META_KEY = "ahiq"
FORMAT_VERSION = 2  # 2: the training config under "train" (1: the options, flat, under "options")


def resolve_checkpoint(checkpoint: str | Path | None, progress: bool = True) -> str | None:
    """The checkpoint given; None: the released one; ``"none"``: None (random heads)."""
    if checkpoint is None:
        return str(released_checkpoint(progress=progress))
    return None if str(checkpoint).lower() == "none" else str(checkpoint)


def released_checkpoint(url: str = RELEASED_URL, progress: bool = True) -> Path:
    """The released checkpoint: the clone's copy, else the user cache's (``$AHIQ_HOME``, else torch hub's), else downloaded
    there, the SHA-256 prefix in its name checked; missing, a :class:`UserError` naming missing backbones too."""
    name = url.rsplit("/", 1)[1]
    if RELEASED_CHECKPOINT.name == name and RELEASED_CHECKPOINT.is_file():
        return RELEASED_CHECKPOINT
    home = os.environ.get("AHIQ_HOME")
    cached = (Path(home).expanduser() if home else Path(torch.hub.get_dir()) / "checkpoints") / name
    if cached.is_file():
        return cached
    reason = offline_variable()
    if reason is None and urllib.parse.urlparse(url).scheme != "file":
        reason = unreachable(url, 3.0)
    if reason is None:
        prefix = name.rsplit(".", 1)[0].rsplit("-", 1)[1]  # torch.hub's convention: name-<SHA-256 prefix>.pth
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(cached), hash_prefix=prefix, progress=progress)
            return cached
        except RuntimeError as err:  # torch.hub's hash check; its temporary file is already gone
            raise UserError(f"{url}: the downloaded file's SHA-256 does not start with {prefix} ({err}); nothing was "
                            f"kept at {cached}; try again, or fetch it by hand and give {arg('checkpoint')}PATH") from None
        except OSError as err:  # urllib's URLError and HTTPError are OSErrors
            reason = f"the download failed ({getattr(err, 'reason', None) or err})"
    parts = [f"the released checkpoint {name} is neither in {RELEASED_CHECKPOINT.parent} nor in the cache {cached.parent}, "
             f"and cannot be downloaded now ({reason}): fetch {url} into {cached.parent} (or `sh download.sh` in a "
             f"clone), or give {arg('checkpoint')}PATH"]
    backbones = missing_pretrained()
    if backbones:
        parts.append(f"the pretrained backbones {', '.join(backbones)} are not on this machine either (timm fetches "
                     f"them online; offline: {arg('vit_weights')}FILE and {arg('cnn_weights')}FILE)")
    parts.append(f"to try the pipeline with nothing downloaded: {arg('checkpoint')}none "
                 f"{arg('pretrained_backbones')}false (random weights, scores not meaningful)")
    raise UserError("; ".join(parts))


@dataclass(frozen=True)
class CheckpointRecord:
    """What a checkpoint records about its model (the authors' file: nothing)."""

    model_config: ModelConfig | None = None
    backbones: dict[str, BackboneSource] = field(default_factory=dict)
    crop_size: int | None = None
    score_norm: dict | None = None
    label_range: tuple[float, float] | None = None
    dataset: str | None = None

    def crop(self, given: int | None = None) -> int:
        """The crop size to use: ``given``, else the training crop recorded, else 224 (the authors')."""
        return given or self.crop_size or 224


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _source(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    kind, name, file, sha, seed = (value.get(k) for k in ("kind", "name", "file", "sha256", "seed"))
    return (kind in ("timm", "file", "random") and isinstance(name, str) and name != ""
            and ((seed is None and kind != "random") or (type(seed) is int and 0 <= seed < 2**32))
            and all(v is None or isinstance(v, str) for v in (file, sha))
            and (kind != "file" or bool(file) and sha is not None))


def _score_norm(norm: Any) -> bool:
    return norm is None or isinstance(norm, dict) and set(norm) <= {"kind", "lo", "hi"} and (
        norm.get("kind") == "none" or norm.get("kind") == "minmax" and _number(norm.get("lo"))
        and _number(norm.get("hi")) and norm["lo"] < norm["hi"])


def _label_range(span: Any) -> bool:  # one label value is a range too (a tiny training part)
    return span is None or isinstance(span, (list, tuple)) and len(span) == 2 and all(map(_number, span)) and (
        span[0] <= span[1])


def read_record(meta: dict, where: str | Path = "checkpoint") -> CheckpointRecord:
    """The :class:`CheckpointRecord` of a checkpoint's metadata, else one :class:`UserError` naming the bad value."""
    def bad(what: str, value: object) -> UserError:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        return UserError(f"{where}: its metadata records {what} {shown}, which this code cannot use; re-save the "
                         "checkpoint with this project or give another")

    if not isinstance(meta, dict):
        raise bad("metadata", meta)
    run = meta.get("train") or meta.get("options") or {}  # format 2, or 1 (the options, flat)
    if not isinstance(run, dict):
        raise bad("a training config", run)
    config = meta.get("model_config")
    try:
        if config is not None and not isinstance(config, dict):
            raise TypeError
        config = None if config is None else ModelConfig.from_dict(config)
    except UserError as err:
        raise UserError(f"{where}: its model_config does not build: {err}") from None
    except (TypeError, ValueError):
        raise bad("model_config", config) from None
    crop = run.get("crop_size")
    try:
        crop = None if crop is None else check_crop_size(crop)
    except UserError:
        raise bad("crop_size", crop) from None
    sources, norm, span = meta.get("backbones") or {}, meta.get("score_norm"), meta.get("label_range")
    split, data = meta.get("split"), run.get("data")
    for what, value, fine in (
            ("backbones", sources, isinstance(sources, dict) and all(
                part in ("vit", "cnn") and _source(v) for part, v in sources.items())),
            ("score_norm (a kind, and for minmax finite lo < hi)", norm, _score_norm(norm)),
            ("label_range (two finite numbers, low <= high)", span, _label_range(span)),
            ("split", split, split is None or isinstance(split, dict)),
            ("a data config", data, data is None or isinstance(data, dict))):
        if not fine:
            raise bad(what, value)
    dataset = (split or {}).get("dataset") or run.get("dataset") or (data or {}).get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        raise bad("dataset", dataset)
    return CheckpointRecord(config, {part: BackboneSource.from_dict(v) for part, v in sources.items()}, crop, norm,
                            tuple(span) if span else None, dataset)


def open_checkpoint(path: str | Path | None) -> tuple[tuple[dict, dict, dict] | None, CheckpointRecord]:
    """``(read_checkpoint(path), its record)``; without a path ``(None, an empty record)``."""
    if not path:
        return None, CheckpointRecord()
    contents = read_checkpoint(path)
    return contents, read_record(contents[2], path)


def read_checkpoint(path: str | Path) -> tuple[dict, dict, dict]:
    """``(deform_net_state, regressor_state, metadata)`` of any supported checkpoint file."""
    path = existing_file(path, "checkpoint", f"give {arg('checkpoint')}FILE (`sh download.sh` fetches the released one)")
    raw = load_torch_file(path, "PyTorch checkpoint")
    state = raw
    for key in ("params", "params_ema", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict) and DEFORM_KEY not in state:
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"{path}: not an AHIQ checkpoint (holds a {type(state).__name__}, not a dict)")
    meta = raw.get(META_KEY, {}) if isinstance(raw, dict) else {}
    if meta is not None and not isinstance(meta, dict):
        raise UserError(f"{path}: its '{META_KEY}' metadata is a {type(meta).__name__}, not a dict; re-save the "
                        "checkpoint with this project or give another")
    version = (meta or {}).get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(f"{path}: written in checkpoint format {version}, newer than this code reads "
                        f"({FORMAT_VERSION}); update this project (git pull) to load it")
    deform, regressor = _head_dicts(state, path)
    for prefix, part in (("deform_net", deform), ("regressor", regressor)):
        bad = next(((k, v) for k, v in part.items() if not isinstance(k, str) or not torch.is_tensor(v)), None)
        if bad is not None:
            raise UserError(f"{path}: {prefix}.{bad[0]} holds a {type(bad[1]).__name__}, not a tensor; re-save the "
                            "checkpoint with this project or give another")
    return deform, regressor, dict(meta or {})


def _head_dicts(state: dict, path: Path) -> tuple[dict, dict]:
    if DEFORM_KEY in state and REGRESSOR_KEY in state:
        deform, regressor = state[DEFORM_KEY], state[REGRESSOR_KEY]
        if not isinstance(deform, dict) or not isinstance(regressor, dict):
            raise UserError(f"{path}: not an AHIQ checkpoint ({DEFORM_KEY} and {REGRESSOR_KEY} must be dicts of "
                            "tensors)")
        return dict(deform), dict(regressor)
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
    return deform, regressor


def check_heads_fit(model: AHIQ | ModelConfig, deform: dict, regressor: dict, path: str | Path = "checkpoint") -> None:
    """``model`` (a config: its network, built on the meta device) takes the tensors, else a :class:`UserError`."""
    if isinstance(model, ModelConfig):
        try:
            model = check_architecture(model)
        except UserError as err:
            raise UserError(f"{path}: its architecture does not build: {err}") from None
    problems = state_dict_problems(model.deform_net.state_dict(), deform, "deform_net.")
    problems += state_dict_problems(model.regressor.state_dict(), regressor, "regressor.")
    if problems:
        raise UserError(f"{path}: tensors do not fit this AHIQ network ({summarise(problems, 12)}); check the "
                        "architecture options (vit, vit_blocks, cnn, cnn_stage, branches, fusion, pooling and their "
                        "kwargs) against the checkpoint")


def load_heads(model: AHIQ, deform: dict, regressor: dict, path: str | Path = "checkpoint") -> None:
    """Load fusion and head tensors strictly; one :class:`UserError` lists every mismatch or names a NaN/Inf tensor."""
    path = Path(path)
    for prefix, state in (("deform_net", deform), ("regressor", regressor)):
        bad = next((k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()
                    and not torch.isfinite(v).all()), None)
        if bad is not None:
            raise UserError(f"{path}: tensor {prefix}.{bad} holds NaN or Inf (the run that wrote it diverged); "
                            "use an earlier checkpoint")
    check_heads_fit(model, deform, regressor, path)
    model.deform_net.load_state_dict(deform, strict=True)
    model.regressor.load_state_dict(regressor, strict=True)


def checkpoint_dict(model: AHIQ, extra_meta: dict | None = None, **training_state: Any) -> dict:
    """Our checkpoint: the authors' two dict names, their other keys when given, plus ``ahiq`` metadata."""
    meta = {"format_version": FORMAT_VERSION, "model_config": model.config.to_dict()}
    if model.backbone_sources:  # where the backbones came from, so load_model rebuilds the same ones
        meta["backbones"] = {part: source.to_dict() for part, source in model.backbone_sources.items()}
    meta.update(extra_meta or {})
    return {DEFORM_KEY: {k: v.detach().cpu() for k, v in model.deform_net.state_dict().items()},
            REGRESSOR_KEY: {k: v.detach().cpu() for k, v in model.regressor.state_dict().items()}, META_KEY: meta,
            **training_state}


def save_checkpoint(path: str | Path, model: AHIQ, extra_meta: dict | None = None, **training_state: Any) -> None:
    atomic_torch_save(checkpoint_dict(model, extra_meta, **training_state), path)


def choose_backbones(config: ModelConfig, recorded: dict[str, BackboneSource], *, vit_weights: str | None = None,
                     cnn_weights: str | None = None, pretrained_backbones: bool | None = None, seed: int | None = None,
                     default_seed: int | None = None, where: str = "the checkpoint") -> dict[str, BackboneSource]:
    """The backbones to build: the ``recorded`` ones unless the arguments ask for others (with a warning), else
    pretrained. Random ones seeded by ``seed``, the recorded seed, ``default_seed`` or torch's generator."""
    chosen = {}
    for part, name, weights in (("vit", config.vit, vit_weights), ("cnn", config.cnn, cnn_weights)):
        rec = recorded.get(part)
        rec = rec if rec is not None and rec.name == name else None  # another architecture: the record is moot
        was_random = rec is not None and rec.kind == "random"
        if weights is None and pretrained_backbones is None and rec is not None and (seed is None or not was_random):
            if rec.kind == "file" and not Path(rec.file or "").is_file():
                raise UserError(f"{where}: its {part} backbone weights were the file {rec.file} (sha256 "
                                f"{str(rec.sha256)[:12]}...), which is not here; give {arg(part + '_weights')}FILE "
                                f"with those weights, or {arg('pretrained_backbones')}true/false to use others")
            source = backbone_source(name, True, rec.file) if rec.kind == "file" else rec
            if not source.same_weights(rec):
                note(f"warning: {rec.file} changed since {where} was trained on it (sha256 {str(rec.sha256)[:12]}... "
                     f"now {str(source.sha256)[:12]}...); scores will differ from the trained model's")
        else:
            part_seed = seed if seed is not None else rec.seed if was_random else default_seed
            if part_seed is None:
                part_seed = drawn_seed()
            pretrained = (not was_random) if pretrained_backbones is None else pretrained_backbones
            source = backbone_source(name, pretrained, weights, part_seed)
            if rec is not None and not source.same_weights(rec):
                note(f"warning: {where} was trained with {part} = {rec.describe()}; using {source.describe()} as asked "
                     "(scores will differ from the trained model's)")
        chosen[part] = source
    return chosen


def load_model(checkpoint: str | Path | None = None, *, vit_weights: str | None = None,
               cnn_weights: str | None = None, pretrained_backbones: bool | None = None, seed: int | None = None,
               default_seed: int | None = None, device: str | torch.device = "auto", config: ModelConfig | None = None,
               contents: tuple[dict, dict, dict] | None = None, **config_overrides: Any) -> AHIQ:
    """A ready AHIQ model in eval mode, ``model(dist, ref)`` on crops ``(B, 3, C, C)`` in [0, 1], C a multiple of 32.
    Architecture: ``config``, else the checkpoint's, else the authors', changed by ``config_overrides``."""
    device = resolve_device(device)  # a bad device is one line before any file is read
    deform, regressor, meta = (contents or read_checkpoint(checkpoint)) if checkpoint is not None else (None, None, {})
    record = read_record(meta, checkpoint or "checkpoint")
    config = config or record.model_config or ModelConfig()
    if config_overrides:
        config = ModelConfig.from_dict({**config.to_dict(), **config_overrides})
    if checkpoint is not None:  # on the meta device, before any weight file is hashed: a misfit costs nothing
        check_heads_fit(config, deform, regressor, checkpoint)
    sources = choose_backbones(config, record.backbones, vit_weights=vit_weights, cnn_weights=cnn_weights,
                               pretrained_backbones=pretrained_backbones, seed=seed, default_seed=default_seed,
                               where=str(checkpoint))
    if record.backbones and (vit_weights, cnn_weights, pretrained_backbones, seed) == (None, None, None, None):
        note(f"note: backbones as {checkpoint} records: vit {sources['vit'].describe()}; "
             f"cnn {sources['cnn'].describe()}")
    model = build_ahiq(config, sources=sources)
    if checkpoint is None:
        note("note: no checkpoint: fusion and head have RANDOM weights; scores are not meaningful")
    else:
        load_heads(model, deform, regressor, checkpoint)
    model.record, model.checkpoint_meta = record, meta
    return model.to(device).eval()
