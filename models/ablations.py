"""The paper's fusion ablations (``ModelConfig.fusion``), and the strided convs every fusion shares."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def downsampling_convs(channels: int, hidden: int, scale: int) -> nn.Sequential:
    """conv3x3 (stride 2 when ``scale >= 2``), ReLU, conv3x3 (stride ``scale / 2``): the CNN grid to the ViT grid."""
    first, second = (2, scale // 2) if scale >= 2 else (1, 1)
    return nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1, stride=first), nn.ReLU(),
                         nn.Conv2d(hidden, channels, 3, padding=1, stride=second))


class ConvFusion(nn.Module):
    """``fusion='conv'``: a plain 3x3 conv in place of the deformable one: ``(N, C, H, W)`` -> ``(N, C, h, w)``."""

    def __init__(self, cnn_channels: int = 768, scale: int = 2, hidden: int = 512):
        super().__init__()
        self.conv = nn.Conv2d(cnn_channels, cnn_channels, 3, 1, 1)
        self.conv1 = downsampling_convs(cnn_channels, hidden, scale)

    def forward(self, cnn: torch.Tensor, offset: None = None) -> torch.Tensor:
        return self.conv1(self.conv(cnn))


class ResampleFusion(nn.Module):
    """``fusion='none'``: CNN features averaged onto the ViT grid: ``(N, C, H, W)`` -> ``(N, C, H / scale, W / scale)``."""

    def __init__(self, scale: int = 2):
        super().__init__()
        self.scale = scale

    def forward(self, cnn: torch.Tensor, offset: None = None) -> torch.Tensor:
        return F.avg_pool2d(cnn, self.scale) if self.scale > 1 else cnn
