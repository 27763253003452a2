"""Which torch device a run uses (``auto``: CUDA when present)."""
from __future__ import annotations

import torch

from ahiq.utils.errors import UserError, arg


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available else CPU; a CUDA device without a GPU is a :class:`UserError`."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{arg('device')}{device}: no CUDA GPU is visible; use {arg('device')}cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"{arg('device')}{device}: not a device; use auto, cpu, cuda or cuda:N") from None
