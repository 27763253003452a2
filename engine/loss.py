"""AHIQ as a differentiable full-reference loss for restoration and generative models (:class:`AHIQLoss`)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ahiq.engine.device import resolve_device
from ahiq.engine.scoring import CropPlanner, Window, load_seeded
from ahiq.models.ahiq import AHIQ
from ahiq.models.checkpoint import resolve_checkpoint
from ahiq.utils.errors import UserError, arg, named

REDUCTIONS = ("mean", "sum", "none")


class Frozen(nn.Module):
    """A frozen AHIQ network in eval mode (whatever ``.train()`` says) and the :class:`CropPlanner` that feeds it."""

    def __init__(self, model: AHIQ, planner: CropPlanner):
        super().__init__()
        self.planner = planner.for_model(model)
        self.model = model.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "Frozen":
        super().train(mode)
        self.model.eval()  # a metric: dropout, batch-norm statistics and the like never change
        return self

    @property
    def device(self) -> torch.device:
        return self.model.mean.device


class AHIQLoss(Frozen):
    """AHIQ as a loss: ``(B, 3, H, W)`` pairs in [0, 1] -> ``1 - score`` reduced by ``reduction`` (lower is better).

    A pair's score is the mean over the crops of ``crops`` (``random:N`` drawn from torch's global RNG at each call),
    as ``score.py`` computes it. Gradients flow to ``dist`` (and ``ref``) through the frozen network, which stays in
    eval mode. The network is loaded from ``checkpoint`` as ``score.py`` loads it, or given ready as ``model``.
    ``checkpointing=True`` recomputes activations in the backward pass: less memory, more time.
    """

    def __init__(self, checkpoint: str | Path | None = None, vit_weights: str | None = None,
                 cnn_weights: str | None = None, pretrained_backbones: bool | None = None, crops: str = "center",
                 crop_size: int | None = None, reduction: str = "mean", device: str | torch.device = "auto",
                 precision: str = "fp32", checkpointing: bool = False, *, model: AHIQ | None = None):
        planner = CropPlanner(crops, crop_size, precision)
        if reduction not in REDUCTIONS:
            raise UserError(f"{arg('reduction')}{reduction}: use one of {', '.join(REDUCTIONS)}")
        if model is None:
            model = load_seeded(resolve_checkpoint(checkpoint), device, vit_weights=vit_weights, cnn_weights=cnn_weights,
                                pretrained_backbones=pretrained_backbones)
        elif checkpoint is not None or vit_weights is not None or cnn_weights is not None:
            raise UserError(f"give either {arg('model')}... or {named('checkpoint')}/{named('vit_weights')}/"
                            f"{named('cnn_weights')}, not both")
        elif device != "auto":
            model = model.to(resolve_device(device))
        super().__init__(model, planner)
        self.reduction = reduction
        self.model.input_gradients(True)
        self.model.set_grad_checkpointing(checkpointing)

    @property
    def crop_size(self) -> int:
        return self.planner.crop

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
        """The score map ``(B, 1, H, W)`` at image resolution, averaged over crops (0 where none looked)."""
        windows, (_, maps, _) = self._run(dist, ref, return_maps=True)
        return torch.stack([self.planner.paste(f, w, *dist.shape[-2:]) for f, w in zip(maps, windows)])[:, None]

    def _scores(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        windows, (scores,) = self._run(dist, ref)
        return torch.stack([self.planner.crop_scores(s, w).mean() for s, w in zip(scores, windows)])

    def _run(self, dist: torch.Tensor, ref: torch.Tensor,
             return_maps: bool = False) -> tuple[list[list[Window]], list[tuple[torch.Tensor, ...]]]:
        """Each image's windows and the network's outputs split by image, in the network's dtype."""
        if dist.dim() != 4 or dist.shape[1] != 3 or dist.shape != ref.shape:
            raise ValueError(f"dist {tuple(dist.shape)} and ref {tuple(ref.shape)}: need the same (B, 3, H, W)")
        if min(dist.shape[-2:]) < self.crop_size:
            raise ValueError(f"images {dist.shape[-1]}x{dist.shape[-2]} are smaller than the crop "
                             f"({self.crop_size}); give larger images or a smaller crop_size")
        dtype = self.model.mean.dtype
        dist, ref = dist.to(self.device, dtype), ref.to(self.device, dtype)
        if self.planner.crops.startswith("random"):
            draw = lambda high, n: torch.randint(0, high, (n,)).tolist()  # noqa: E731
            windows = [self.planner.windows(*dist.shape[-2:], draw=draw) for _ in range(len(dist))]
        else:
            windows = [self.planner.windows(*dist.shape[-2:])] * len(dist)
        out = self.planner.forward(self.model, self.planner.cut(dist, windows), self.planner.cut(ref, windows),
                                   return_maps)
        sizes = [len(w) for w in windows]
        return windows, [o.to(dtype).split(sizes) for o in (out if return_maps else (out,))]
