"""One optimisation step of AHIQ, with the optimiser and learning-rate schedule it runs under (the authors')."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ahiq.engine.device import precision_context
from ahiq.models.ahiq import AHIQ


def optimizer_groups(model: AHIQ, lr: float, weight_decay: float, feature_lr_scale: float = 1.0) -> list[dict]:
    """Adam parameter groups: the authors' two; with ``feature_lr_scale != 1`` the feature-reading layers apart."""
    wide = {id(model.regressor.down_channel.weight)}
    for name in ("conv_offset", "deform"):  # absent in the fusion ablations
        if hasattr(model.deform_net, name):
            wide.add(id(getattr(model.deform_net, name).weight))
    groups = []
    for part in (model.regressor, model.deform_net):
        params = list(part.parameters())
        if not params:  # no fusion parameters (ViT only, or fusion none)
            continue
        if feature_lr_scale == 1.0:
            groups.append({"params": params, "lr": lr, "weight_decay": weight_decay})
            continue
        groups.append({"params": [p for p in params if id(p) not in wide], "lr": lr, "weight_decay": weight_decay})
        groups.append({"params": [p for p in params if id(p) in wide], "lr": lr * feature_lr_scale,
                       "weight_decay": weight_decay})
    return groups


def build_optimizer(model: AHIQ, lr: float = 1e-4, weight_decay: float = 1e-5,
                    feature_lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """Adam over :func:`optimizer_groups`, fused on CPU and CUDA (the authors' formula, one pass per group)."""
    fused = next(model.regressor.parameters()).device.type in ("cuda", "cpu")
    return torch.optim.Adam(optimizer_groups(model, lr, weight_decay, feature_lr_scale), fused=fused)


def build_scheduler(optimizer: torch.optim.Optimizer, T_max: int = 50, eta_min: float = 0.0,
                    total_steps: int = 0) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine annealing per iteration: ``T_max`` steps per half period, or ``T_max=0``: one over ``total_steps``."""
    if T_max < 0 or (T_max == 0 and total_steps < 1):
        raise ValueError(f"T_max={T_max}: need T_max >= 1, or T_max=0 with total_steps >= 1 (got {total_steps})")
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=T_max or total_steps, eta_min=eta_min)


def step_loss(model: AHIQ, optimizer: torch.optim.Optimizer, dist: torch.Tensor, ref: torch.Tensor,
              target: torch.Tensor, precision: str = "fp32", *, net: nn.Module | None = None,
              grad_clip: float = 0.0, strict_fp32: bool = True) -> torch.Tensor:
    """:func:`train_step` returning a 0-d tensor (no host sync); ``net``: ``model`` wrapped, run instead."""
    for backbone in (model.vit, model.cnn):  # one of them is None in the branch ablations
        if backbone is not None:
            backbone.eval()
    with precision_context(precision, dist.device, strict=strict_fp32):
        pred = (net or model)(dist, ref)
    loss = F.mse_loss(pred.float(), target.float())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return loss.detach()


def train_step(model: AHIQ, optimizer: torch.optim.Optimizer, dist: torch.Tensor, ref: torch.Tensor,
               target: torch.Tensor, precision: str = "fp32", **options) -> float:
    """One optimisation step on ``dist``, ``ref`` ``(B, 3, H, W)`` and ``target`` ``(B,)``; the loss before it."""
    return float(step_loss(model, optimizer, dist, ref, target, precision, **options))
