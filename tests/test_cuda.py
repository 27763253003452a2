"""GPU-only checks (skipped without CUDA): the sampled deformable conv and bf16 scores on the device."""
from __future__ import annotations

import pytest
import torch
import torchvision

from ahiq.models.deform import deform_conv3x3

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run benchmarks/gpu_check.sh)")


@pytest.fixture(scope="module")
def default_model():
    """The default architecture (ViT-B/8 blocks 1-5, ResNet-50 layer1) with the seeded random weights these
    GPU checks were calibrated with (heads ~ N(0, 1/fan_in)): on a GPU the real size costs nothing."""
    from ahiq.models.ahiq import build_ahiq

    torch.manual_seed(0)
    model = build_ahiq(pretrained_backbones=False)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in list(model.deform_net.named_parameters()) + list(model.regressor.named_parameters()):
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / fan_in) ** 0.5 * (0.3 if "offset" in name else 1.0))
    return model.eval()


def test_sampled_deform_conv_equals_torchvision_on_cuda():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 768, 56, 56, generator=gen).cuda()
    offset = (torch.randn(4, 18, 56, 56, generator=gen) * 3).cuda()
    weight = (torch.randn(768, 768, 3, 3, generator=gen) * 0.02).cuda()
    bias = torch.randn(768, generator=gen).cuda()
    ours = deform_conv3x3(x, offset, weight, bias)
    ref = torchvision.ops.deform_conv2d(x, offset.repeat_interleave(2, 0), weight, bias, padding=(1, 1))
    assert (ours - ref).abs().max().item() < 1e-5 * max(1.0, ref.abs().max().item())
    low = deform_conv3x3(x.bfloat16(), offset, weight, bias).float()
    assert (low - ref).abs().max().item() < 0.02 * ref.abs().max().item()


def test_model_on_cuda_matches_cpu_and_bf16_is_close(default_model):
    small_model = default_model
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    gen = torch.Generator().manual_seed(1)
    dist = torch.rand(4, 3, 224, 224, generator=gen)
    ref = (dist + 0.1 * torch.rand(dist.shape, generator=gen)).clamp(0, 1)
    with torch.inference_mode():
        cpu = small_model(dist, ref)
        model = small_model.cuda()
        try:
            gpu = model(dist.cuda(), ref.cuda()).cpu()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                low = model(dist.cuda(), ref.cuda()).float().cpu()
        finally:
            small_model.cpu()
    assert (gpu - cpu).abs().max().item() < 1e-4
    assert (low - cpu).abs().max().item() < 2e-3 * max(1.0, cpu.abs().max().item())
