"""AHIQ as a differentiable full-reference metric and loss (:class:`AHIQLoss`).

For restoration and generative models: ``loss = AHIQLoss(checkpoint)(output, target)`` is ``1 - score``
(lower is better) with gradients that reach ``output`` through the frozen network; ``score`` and
``score_map`` give the metric and its spatial map. The network never changes.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ahiq.data.crops import crop_windows, parse_crops
from ahiq.engine.device import PRECISIONS, precision_context, resolve_device
from ahiq.engine.scoring import paste_maps
from ahiq.models.ahiq import AHIQ
from ahiq.models.checkpoint import CheckpointRecord, load_model, resolve_checkpoint
from ahiq.utils.errors import UserError, arg, named

REDUCTIONS = ("mean", "sum", "none")

Window = tuple[int, int, int, int]  # (image index in the batch, top, left, how many of the crops are this window)


class AHIQLoss(nn.Module):
    """AHIQ as a loss: ``1 - score`` of (distorted, reference) pairs, lower is better.

    ``forward(dist, ref)``: ``(B, 3, H, W)`` RGB float in [0, 1], ``H, W >= crop_size`` -> ``1 - score``
    reduced by ``reduction`` (``mean`` or ``sum``: a scalar; ``none``: ``(B,)``). A pair's score is the mean
    of the network's score over the crops of ``crops``, taken at the same windows of ``dist`` and ``ref``:
    ``center``, ``five``, ``nine``, ``grid:N`` (as ``score.py``), or ``random:N``, drawn at each call from
    torch's global RNG (different windows at every training step, reproducible with ``torch.manual_seed``).
    Identical windows are computed once (a 224x224 image costs one crop under any protocol).

    Gradients flow to ``dist`` (and to ``ref`` when it requires grad) through the frozen backbones. The
    network never changes: its parameters have ``requires_grad=False`` and it stays in eval mode when a
    parent module calls ``.train()``. ``score`` and ``score_map`` give the metric itself.

    The network comes from ``checkpoint`` exactly as in ``score.py`` (:func:`models.checkpoint.load_model`: the
    architecture, backbones and training crop size the checkpoint records; no checkpoint: the released one once
    `sh download.sh` has fetched it; ``"none"``: random heads), or is given ready as ``model`` (then frozen in
    place). ``crop_size`` None: the checkpoint's training crop, else 224; ``pretrained_backbones`` None: the
    recorded backbones.
    ``checkpointing=True`` recomputes the activations of the ViT blocks and of the deformable fusion in the
    backward pass instead of storing them: less memory per step, more time (see the README's figures).
    """

    def __init__(self, checkpoint: str | Path | None = None, vit_weights: str | None = None,
                 cnn_weights: str | None = None, pretrained_backbones: bool | None = None, crops: str = "center",
                 crop_size: int | None = None, reduction: str = "mean", device: str | torch.device = "auto",
                 precision: str = "fp32", checkpointing: bool = False, *, model: AHIQ | None = None):
        super().__init__()
        kind, count = parse_crops(crops)
        if reduction not in REDUCTIONS:
            raise UserError(f"{arg('reduction')}{reduction}: use one of {', '.join(REDUCTIONS)}")
        if precision not in PRECISIONS:
            raise UserError(f"{arg('precision')}{precision}: use one of {', '.join(PRECISIONS)}")
        if model is None:
            model = load_model(resolve_checkpoint(checkpoint), vit_weights=vit_weights, cnn_weights=cnn_weights,
                               pretrained_backbones=pretrained_backbones, device=resolve_device(device))
        elif checkpoint is not None or vit_weights is not None or cnn_weights is not None:
            raise UserError(f"give either {arg('model')}... or {named('checkpoint')}/{named('vit_weights')}/"
                            f"{named('cnn_weights')}, not both")
        elif device != "auto":
            model = model.to(resolve_device(device))
        crop_size = (model.record or CheckpointRecord()).crop(crop_size)
        if crop_size % 32:
            raise UserError(f"{arg('crop_size')}{crop_size}: must be a multiple of 32")
        self.crops, self.crop_kind, self.crop_count = crops, kind, count
        self.crop_size, self.reduction, self.precision = crop_size, reduction, precision
        self.model = model
        self.model.requires_grad_(False)
        self.model.input_gradients(True)
        self.model.set_grad_checkpointing(checkpointing)
        self.model.eval()

    def train(self, mode: bool = True) -> "AHIQLoss":
        super().train(mode)
        self.model.eval()  # a metric: dropout, batch-norm statistics and the like never change
        return self

    @property
    def device(self) -> torch.device:
        return self.model.mean.device

    def forward(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``1 - score`` reduced by ``reduction``; differentiable in ``dist`` and ``ref``."""
        loss = 1 - self._scores(dist, ref)
        if self.reduction == "mean":
            return loss.mean()
        return loss.sum() if self.reduction == "sum" else loss

    @torch.no_grad()
    def score(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Scores ``(B,)`` (higher is better) without gradients: ``score.py``'s for the same crops."""
        return self._scores(dist, ref)

    def score_map(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """The patch score map ``f`` at image resolution, ``(B, 1, H, W)``, averaged over overlapping crops
        (the map of ``score.py --save_maps``; pixels no crop covers are 0). Differentiable when grad is on."""
        dist, ref = self._inputs(dist, ref)
        windows = self._windows(dist.shape[0], *dist.shape[-2:])
        _, f, _ = self._run(dist, ref, windows, return_maps=True)
        maps = []
        for i in range(dist.shape[0]):
            mine = [k for k, w in enumerate(windows) if w[0] == i]
            repeats = torch.tensor([windows[k][3] for k in mine], device=f.device)
            positions = [windows[k][1:3] for k in mine for _ in range(windows[k][3])]
            maps.append(paste_maps(f[mine].repeat_interleave(repeats, dim=0), positions, *dist.shape[-2:],
                                   self.crop_size))
        return torch.stack(maps)[:, None]

    def _scores(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        dist, ref = self._inputs(dist, ref)
        b = dist.shape[0]
        windows = self._windows(b, *dist.shape[-2:])
        scores = self._run(dist, ref, windows)
        owner = torch.tensor([w[0] for w in windows], device=scores.device)
        weight = torch.tensor([w[3] for w in windows], device=scores.device, dtype=scores.dtype)
        return scores.new_zeros(b).index_add(0, owner, scores * weight) / self.crop_count

    def _inputs(self, dist: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if dist.dim() != 4 or dist.shape[1] != 3 or dist.shape != ref.shape:
            raise ValueError(f"dist {tuple(dist.shape)} and ref {tuple(ref.shape)}: need the same (B, 3, H, W)")
        if min(dist.shape[-2:]) < self.crop_size:
            raise ValueError(f"images {dist.shape[-1]}x{dist.shape[-2]} are smaller than the crop "
                             f"({self.crop_size}); give larger images or a smaller crop_size")
        dtype = self.model.mean.dtype
        return dist.to(self.device, dtype), ref.to(self.device, dtype)

    def _windows(self, batch: int, height: int, width: int) -> list[Window]:
        """The distinct crop windows of each image (``data.crops``; ``random:N`` drawn from torch's RNG, anew for
        each image), with how many of its crops each one stands for."""
        draw = lambda high, n: torch.randint(0, high, (n,)).tolist()  # noqa: E731
        fixed = None if self.crop_kind == "random" else crop_windows(self.crops, height, width, self.crop_size)
        return [(i, top, left, n) for i in range(batch)
                for top, left, n in fixed or crop_windows(self.crops, height, width, self.crop_size, draw=draw)]

    def _run(self, dist: torch.Tensor, ref: torch.Tensor, windows: list[Window], return_maps: bool = False):
        c = self.crop_size
        if len(windows) == dist.shape[0] and dist.shape[-2:] == (c, c):
            dist_c, ref_c = dist, ref  # one window per image and it is the whole image: no copy
        else:
            dist_c = torch.stack([dist[i, :, t:t + c, x:x + c] for i, t, x, _ in windows])
            ref_c = torch.stack([ref[i, :, t:t + c, x:x + c] for i, t, x, _ in windows])
        with precision_context(self.precision, self.device):
            out = self.model(dist_c, ref_c, return_maps=return_maps)
        dtype = dist.dtype  # bf16 outputs of autocast back to the network's dtype
        return tuple(o.to(dtype) for o in out) if return_maps else out.to(dtype)
