"""AHIQ as a metric on paths, PIL images, arrays or tensors: ``ahiq.create_metric()`` and the one-pair ``ahiq.score``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from ahiq.data.images import read_image
from ahiq.engine.loss import AHIQLoss, Frozen
from ahiq.engine.scoring import CropPlanner, load_seeded, score_stream
from ahiq.models.ahiq import AHIQ
from ahiq.models.checkpoint import resolve_checkpoint
from ahiq.models.config import SEED
from ahiq.utils.errors import UserError

ImageLike = Union[str, os.PathLike, np.ndarray, torch.Tensor, "PIL.Image.Image"]  # noqa: F821
WHAT_TO_PASS = ("a file path, a PIL image, a numpy array HxWx3 (uint8, or float in [0, 1]), a tensor (3, H, W) or "
                "(B, 3, H, W) in [0, 1], or a list of these")
MODEL_OPTIONS = ("vit_weights", "cnn_weights", "pretrained_backbones", "seed")
LOSS_OPTIONS = ("reduction", "checkpointing")


class AHIQMetric(Frozen):
    """AHIQ full-reference quality, higher = better: ``metric(dist, ref) -> (B,)`` scores.

    ``dist`` and ``ref``: one image or a batch (:data:`WHAT_TO_PASS`; one reference may serve the batch), each pair
    of one size, at least ``crop_size``. ``return_maps=True`` also gives each pair's score and weight maps ``(H, W)``
    (NaN where no crop looked). The network is frozen.
    """

    lower_better = False
    score_range = "~0, ~1"  # the released model's; as pyiqa names it

    def __init__(self, model: AHIQ, crops: str = "center", crop_size: int | None = None, precision: str = "fp32",
                 seed: int | None = None, batch_size: int = 16):
        planner = CropPlanner(crops, crop_size, precision)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: give the number of crops per forward pass, 1 or more")
        super().__init__(model, planner)
        self.seed, self.batch_size = SEED if seed is None else seed, batch_size

    def forward(self, dist: ImageLike | Sequence[ImageLike], ref: ImageLike | Sequence[ImageLike],
                return_maps: bool = False):
        """Scores ``(B,)`` float32; with ``return_maps``, also the lists of score maps and weight maps."""
        dists, refs = as_images(dist, "dist"), as_images(ref, "ref")
        if len(refs) == 1 < len(dists):
            refs = refs * len(dists)  # one reference for the batch: the same object, so encoded once
        if len(refs) != len(dists):
            raise ValueError(f"dist holds {len(dists)} images and ref {len(refs)}: give one reference per distorted "
                             "image, or one reference for all")
        ids = {id(r): k for k, r in reversed(list(enumerate(refs)))}  # a repeated reference keeps one key
        pairs, arrays, plan = [], {}, self.planner
        for i, (d, r) in enumerate(zip(dists, refs)):
            if d.shape[:2] != r.shape[:2]:
                raise ValueError(f"dist[{i}] is {d.shape[1]}x{d.shape[0]} but ref[{i}] is {r.shape[1]}x{r.shape[0]}: "
                                 "a pair's images must have the same size")
            if min(d.shape[:2]) < plan.crop:
                raise ValueError(f"dist[{i}] is {d.shape[1]}x{d.shape[0]}, smaller than the {plan.crop}x{plan.crop} "
                                 "crop: give larger images or create_metric(crop_size=...) with a smaller multiple of 32")
            key_d, key_r = Path(f"dist[{i}]"), Path(f"ref[{ids[id(r)]}]")
            arrays[key_d], arrays[key_r] = d, r
            pairs.append((key_d, key_r))
        found = dict(score_stream(self.model, pairs, plan.crops, plan.crop, self.seed, self.batch_size, plan.precision,
                                  with_maps=return_maps, read=arrays.__getitem__))
        results = [found[i] for i in range(len(pairs))]
        scores = torch.tensor([r.score for r in results], dtype=torch.float32, device=self.device)
        return (scores, [r.score_map for r in results], [r.weight_map for r in results]) if return_maps else scores


def as_images(x: Any, name: str) -> list[np.ndarray]:
    """``x`` as RGB arrays ``(H, W, 3)``, uint8 or float32 in [0, 1]; else a ValueError naming ``name``."""
    if isinstance(x, (list, tuple)):
        if not x:
            raise ValueError(f"{name} is empty: give {WHAT_TO_PASS}")
        return [img for k, item in enumerate(x) for img in as_images(item, f"{name}[{k}]")]
    if isinstance(x, (str, os.PathLike)):
        if Path(x).is_dir():
            raise ValueError(f"{name} is a folder ({os.fspath(x)}): the metric scores images; for folders paired by "
                             "name use `ahiq score --ref REF --dist DIST` (score.py) or give the files")
        try:
            return [read_image(x)]
        except UserError as err:
            raise ValueError(f"{name}: {err}") from None
    if isinstance(x, torch.Tensor):
        if x.dim() not in (3, 4) or x.shape[-3] not in (1, 3):
            raise ValueError(f"{name} is a tensor of shape {tuple(x.shape)}: give (3, H, W) or (B, 3, H, W) RGB in "
                             "[0, 1] (drop an alpha channel: x[..., :3, :, :])")
        x = x.detach().cpu()
        batch = (x.float() if x.is_floating_point() else x).reshape(-1, *x.shape[-3:]).movedim(1, -1)
        return [_checked(img.numpy(), f"{name}[{k}]" if x.dim() == 4 else name) for k, img in enumerate(batch)]
    if isinstance(x, np.ndarray):
        return [_checked(x, name)]
    if not type(x).__module__.startswith("PIL."):
        raise ValueError(f"{name} is a {type(x).__name__}: give {WHAT_TO_PASS}")
    from PIL import ImageOps

    image = ImageOps.exif_transpose(x)  # as viewers show it, as files are read
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return [_checked(np.asarray(image).astype(np.float32) / 65535, name)]
    return [_checked(np.asarray(image.convert("RGB")), name)]


def _checked(array: np.ndarray, name: str) -> np.ndarray:
    """One image ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` as RGB uint8 or float32 in [0, 1]."""
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        raise ValueError(f"{name} is an array of shape {array.shape} (channels first): numpy images are HxWx3; "
                         "pass array.transpose(1, 2, 0), or a tensor")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3):
        raise ValueError(f"{name} has shape {array.shape}: give HxWx3 RGB (or HxW grey); drop an alpha channel with "
                         "x[..., :3]")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.dtype == np.uint8:
        return np.require(array, requirements=["C", "W"])  # PIL's arrays are read-only: a copy then
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} holds {array.dtype} values: give uint8 (0..255) or floats in [0, 1]")
    array = np.ascontiguousarray(array, dtype=np.float32)
    low, high = float(array.min()), float(array.max())
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 1:
        hint = "divide 8-bit values by 255" if high > 1 else "clamp them to [0, 1]"
        raise ValueError(f"{name} holds values from {low:g} to {high:g}: give floats in [0, 1] ({hint})")
    return array


def create_metric(checkpoint: str | os.PathLike | None = None, *, crops: str = "center", crop_size: int | None = None,
                  device: str | torch.device = "auto", precision: str = "fp32", as_loss: bool = False,
                  **options: Any) -> nn.Module:
    """AHIQ as a ``torch.nn.Module``: :class:`AHIQMetric` (``as_loss=False``) or :class:`engine.loss.AHIQLoss`.

    ``checkpoint``: None for the released model, a file, or ``"none"`` (random heads). ``options``:
    :data:`MODEL_OPTIONS`, and ``batch_size``, or with ``as_loss`` :data:`LOSS_OPTIONS`.
    """
    allowed = (*MODEL_OPTIONS, *(LOSS_OPTIONS if as_loss else ("batch_size",)))
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"create_metric() got unknown option(s) {', '.join(unknown)}; it takes {', '.join(allowed)}")
    path = resolve_checkpoint(None if checkpoint is None else os.fspath(checkpoint))
    model = load_seeded(path, device, options.get("seed"),
                        **{k: options.get(k) for k in ("vit_weights", "cnn_weights", "pretrained_backbones")})
    if as_loss:
        return AHIQLoss(crops=crops, crop_size=crop_size, precision=precision, model=model,
                        **{k: options[k] for k in LOSS_OPTIONS if k in options})
    return AHIQMetric(model, crops, crop_size, precision, options.get("seed"), options.get("batch_size", 16))


_last: tuple[str, nn.Module] | None = None  # ahiq.score's metric, kept while the settings stay the same


def score(dist: ImageLike, ref: ImageLike, **kwargs: Any) -> float:
    """The AHIQ score of one pair; ``kwargs`` as :func:`create_metric` takes them (the metric is kept)."""
    global _last
    key = repr(sorted(kwargs.items()))
    if _last is None or _last[0] != key:
        _last = (key, create_metric(**kwargs))
    scores = _last[1](dist, ref)
    if scores.numel() != 1:
        raise ValueError(f"ahiq.score takes one pair, got {scores.numel()}; use ahiq.create_metric() for batches")
    return float(scores[0])
