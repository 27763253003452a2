"""Deformable 3x3 convolution as bilinear sampling + matrix multiplies.

Same result as ``torchvision.ops.deform_conv2d`` (stride 1, padding 1, one offset group, no mask) but
without torchvision's im2col buffer: for each of the 9 kernel taps the input is sampled at the shifted
positions and multiplied by that tap's ``(C_out, C_in)`` weight slice, so the work is 9 gathers and 9
GEMMs that run in the input's dtype (bf16 on tensor cores) while positions stay in fp32. On a CPU it is
about twice as fast as torchvision's kernel.
"""
from __future__ import annotations

import torch
import torchvision


def _bilinear_taps(offset: torch.Tensor, height: int, width: int, tap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices ``(B, 4, H*W)`` and weights ``(B, 4, H*W)`` of the 4 neighbours sampled by one tap.

    Follows torchvision's rule: a position outside ``(-1, H) x (-1, W)`` reads 0, and neighbours that
    fall outside the image contribute 0.
    """
    b = offset.shape[0]
    ki, kj = divmod(tap, 3)
    dy = offset[:, 2 * tap].float()
    dx = offset[:, 2 * tap + 1].float()
    ys = torch.arange(height, device=offset.device, dtype=torch.float32).view(1, -1, 1) + (ki - 1)
    xs = torch.arange(width, device=offset.device, dtype=torch.float32).view(1, 1, -1) + (kj - 1)
    y = ys + dy
    x = xs + dx
    inside = (y > -1) & (y < height) & (x > -1) & (x < width)
    y0 = torch.floor(y)
    x0 = torch.floor(x)
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    y0i, x0i = y0.long(), x0.long()
    indices, weights = [], []
    for yi, wy in ((y0i, hy), (y0i + 1, ly)):
        for xi, wx in ((x0i, hx), (x0i + 1, lx)):
            valid = inside & (yi >= 0) & (yi < height) & (xi >= 0) & (xi < width)
            indices.append((yi.clamp(0, height - 1) * width + xi.clamp(0, width - 1)).view(b, -1))
            weights.append(torch.where(valid, wy * wx, torch.zeros_like(wx)).view(b, -1))
    return torch.stack(indices, 1), torch.stack(weights, 1)


def deform_conv3x3(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Deformable 3x3 convolution, stride 1, padding 1.

    ``x`` ``(B * k, C_in, H, W)``; ``offset`` ``(B, 18, H, W)`` in torchvision's layout (for kernel tap
    ``t = 3 * i + j``, channels ``2t, 2t+1`` hold ``(dy, dx)``); images ``x[b * k : (b + 1) * k]`` all use
    ``offset[b]``, so one set of offsets serves several feature maps (AHIQ: distorted and reference).
    ``weight`` ``(C_out, C_in, 3, 3)``. Returns ``(B * k, C_out, H, W)`` in ``x``'s dtype.
    """
    n, c_in, h, w = x.shape
    b = offset.shape[0]
    if n % b:
        raise ValueError(f"batch of x ({n}) is not a multiple of the offsets' batch ({b})")
    k = n // b
    c_out = weight.shape[0]
    flat = x.reshape(b, k * c_in, h * w)
    weight = weight.to(x.dtype)
    out = None
    for tap in range(9):
        index, wts = _bilinear_taps(offset, h, w, tap)
        sampled = None
        for corner in range(4):
            values = flat.gather(2, index[:, corner : corner + 1].expand(b, k * c_in, h * w))
            term = values * wts[:, corner : corner + 1].to(x.dtype)
            sampled = term if sampled is None else sampled + term
        part = torch.matmul(weight[:, :, tap // 3, tap % 3], sampled.view(b, k, c_in, h * w))
        out = part if out is None else out + part  # (B, k, C_out, H*W)
    if bias is not None:
        out = out + bias.to(x.dtype).view(1, 1, c_out, 1)
    return out.view(n, c_out, h, w)


def deform_conv3x3_torchvision(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                               bias: torch.Tensor | None) -> torch.Tensor:
    """The same operation through ``torchvision.ops.deform_conv2d`` (fp32 im2col): the reference."""
    offset = offset.repeat_interleave(x.shape[0] // offset.shape[0], dim=0)
    return torchvision.ops.deform_conv2d(x, offset.to(x.dtype), weight.to(x.dtype),
                                         None if bias is None else bias.to(x.dtype), padding=(1, 1))
