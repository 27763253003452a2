"""Fast forms of AHIQ's two costly layers: the deformable 3x3 conv as 9 bilinear gathers and 9 GEMMs (no im2col
buffer), and the offsets' "nearest upsample, then 3x3 conv" as one convolution on the small map."""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision


def _bilinear_taps(offset: torch.Tensor, height: int, width: int, tap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices ``(4, B*H*W)`` into the flattened ``(B*H*W, C)`` input and weights ``(4, B*H*W, 1)`` of the 4
    neighbours one kernel tap samples, by torchvision's rules (outside ``(-1, H) x (-1, W)`` reads 0; -1 counts as
    inside, which reproduces torchvision's offset gradient there)."""
    b = offset.shape[0]
    ki, kj = divmod(tap, 3)
    dy = offset[:, 2 * tap].float()
    dx = offset[:, 2 * tap + 1].float()
    y = torch.arange(height, device=offset.device, dtype=torch.float32).view(1, -1, 1) + (ki - 1) + dy
    x = torch.arange(width, device=offset.device, dtype=torch.float32).view(1, 1, -1) + (kj - 1) + dx
    inside = (y >= -1) & (y < height) & (x >= -1) & (x < width)
    y0, x0 = torch.floor(y), torch.floor(x)
    ly, lx = y - y0, x - x0
    y0i, x0i = y0.long(), x0.long()
    base = (torch.arange(b, device=offset.device) * (height * width)).view(b, 1, 1)
    indices, weights = [], []
    for yi, wy in ((y0i, 1 - ly), (y0i + 1, ly)):
        for xi, wx in ((x0i, 1 - lx), (x0i + 1, lx)):
            valid = inside & (yi >= 0) & (yi < height) & (xi >= 0) & (xi < width)
            indices.append((base + yi.clamp(0, height - 1) * width + xi.clamp(0, width - 1)).reshape(-1))
            weights.append(torch.where(valid, wy * wx, torch.zeros_like(wx)).reshape(-1, 1))
    return torch.stack(indices), torch.stack(weights)


def deform_conv3x3(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Deformable 3x3 conv, stride 1, padding 1: ``x`` ``(B * k, C_in, H, W)``, ``offset`` ``(B, 18, H, W)`` in
    torchvision's layout shared by ``x[b * k : (b + 1) * k]``, ``weight`` ``(C_out, C_in, 3, 3)`` ->
    ``(B * k, C_out, H, W)`` in ``x``'s dtype, contiguous."""
    n, c_in, h, w = x.shape
    b = offset.shape[0]
    if n % b:
        raise ValueError(f"batch of x ({n}) is not a multiple of the offsets' batch ({b})")
    k = n // b
    c_out = weight.shape[0]
    # (B, k, C, H, W) -> rows (B*H*W, k*C): the k maps of a pair share each row's sampling position.
    rows = x.view(b, k, c_in, h, w).permute(0, 3, 4, 1, 2).contiguous().view(b * h * w, k * c_in)
    # tap-major (C_in, C_out) slices; unbind (not taps[t]) so that backward stacks the 9 gradients into one
    # buffer instead of zero-filling a whole (9, C_in, C_out) tensor per tap
    taps = weight.to(x.dtype).permute(2, 3, 1, 0).reshape(9, c_in, c_out).unbind(0)
    out = torch.zeros(b * h * w * k, c_out, dtype=x.dtype, device=x.device)
    if bias is not None:
        out += bias.to(x.dtype)
    for tap in range(9):
        index, wts = _bilinear_taps(offset, h, w, tap)
        sampled = F.embedding_bag(index.t().contiguous(), rows, per_sample_weights=wts[..., 0].t().to(x.dtype).contiguous(),
                                  mode="sum")
        out.addmm_(sampled.view(b * h * w * k, c_in), taps[tap])
    # rows (B, H, W, k, C_out) -> (B*k, C_out, H, W) in one copy. Contiguous, as torchvision returns it: the
    # convolutions after it then sum in the same order as the authors' (in channels-last they take another
    # kernel whose rounding, amplified by training, moved 0.6 % of the weights of a 3-step check by > 1e-6).
    return out.view(b, h, w, k, c_out).permute(0, 3, 4, 1, 2).reshape(n, c_out, h, w)


def deform_conv3x3_torchvision(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                               bias: torch.Tensor | None) -> torch.Tensor:
    """The same operation through ``torchvision.ops.deform_conv2d`` (fp32 im2col): the reference."""
    offset = offset.repeat_interleave(x.shape[0] // offset.shape[0], dim=0)
    return torchvision.ops.deform_conv2d(x, offset.to(x.dtype), weight.to(x.dtype),
                                         None if bias is None else bias.to(x.dtype), padding=(1, 1))


def phase_kernels(weight: torch.Tensor, bias: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """"Nearest-upsample by ``scale``, then 3x3 conv" as one 3x3 conv on the small map: a kernel per phase ``(a, b)``
    (output pixel ``(s*i + a, s*j + b)``), stacked in pixel-shuffle order."""
    s = scale
    hit = torch.zeros(s, 3, 3, dtype=weight.dtype, device=weight.device)  # [phase, source offset + 1, tap]
    for a in range(s):
        for t in range(3):
            hit[a, (a + t - 1) // s + 1, t] = 1
    kernel = torch.einsum("ayt,bxu,octu->oabcyx", hit, hit, weight)
    out_ch, in_ch = weight.shape[:2]
    return kernel.reshape(out_ch * s * s, in_ch, 3, 3), bias.repeat_interleave(s * s)


def upsampled_conv3x3(x: torch.Tensor, size: tuple[int, int], weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``conv3x3(nearest_upsample(x, size))``, padding 1, without the upsampled map where ``size`` is a whole multiple."""
    h, w = x.shape[-2:]
    if size[0] % h or size[1] % w or size[0] // h != size[1] // w:
        return F.conv2d(F.interpolate(x, size=size, mode="nearest"), weight, bias, padding=1)
    scale = size[0] // h
    if scale == 1:
        return F.conv2d(x, weight, bias, padding=1)
    kernel, bias = phase_kernels(weight, bias, scale)
    return F.pixel_shuffle(F.conv2d(x, kernel.to(x.dtype), bias.to(x.dtype), padding=1), scale)
