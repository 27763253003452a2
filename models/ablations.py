"""The paper's ablations of the fusion (``ModelConfig.fusion``): the other two ways the CNN features reach the
ViT grid. Single-branch and mean-pooling ablations are switches of :class:`models.ahiq.AHIQ` and its head."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvFusion(nn.Module):
    """``fusion='conv'``: the deformable fusion with a plain 3x3 conv of the same shape (``conv``) in place of the
    deformable one, and nothing to steer it. ``forward(cnn, None)``: ``(N, C, H, W)`` -> ``(N, C, h, w)``."""

    def __init__(self, cnn_channels: int = 768, scale: int = 2, hidden: int = 512):
        super().__init__()
        from ahiq.models.ahiq import downsampling_convs  # the same strided convs as the deformable fusion

        self.conv = nn.Conv2d(cnn_channels, cnn_channels, 3, 1, 1)
        self.conv1 = downsampling_convs(cnn_channels, hidden, scale)

    def offsets(self, steer: torch.Tensor, size: tuple[int, int]) -> None:
        return None

    def forward(self, cnn: torch.Tensor, offset: None = None) -> torch.Tensor:
        return self.conv1(self.conv(cnn))


class ResampleFusion(nn.Module):
    """``fusion='none'``: CNN features only averaged over ``scale x scale`` cells onto the ViT grid (no
    parameters). ``forward(cnn, None)``: ``(N, C, H, W)`` -> ``(N, C, H / scale, W / scale)``."""

    def __init__(self, scale: int = 2):
        super().__init__()
        self.scale = scale

    def offsets(self, steer: torch.Tensor, size: tuple[int, int]) -> None:
        return None

    def forward(self, cnn: torch.Tensor, offset: None = None) -> torch.Tensor:
        return F.avg_pool2d(cnn, self.scale) if self.scale > 1 else cnn
