"""The network: spec §2 tensor table, truncated backbones, fusion/head math, deformable conv, offsets rewrite."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision

from ahiq.models.ahiq import AHIQ, ModelConfig, build_ahiq
from ahiq.models.backbones import ResNetFeatures, ViTFeatures
from ahiq.models.deform import deform_conv3x3, deform_conv3x3_torchvision, phase_kernels
from tests.conftest import TINY

SPEC_TABLE = {  # ../shared/docs/ahiq-reference.md §2
    "deform_net": {
        "conv_offset.weight": (18, 3840, 3, 3), "conv_offset.bias": (18,),
        "deform.weight": (768, 768, 3, 3), "deform.bias": (768,),
        "conv1.0.weight": (512, 768, 3, 3), "conv1.0.bias": (512,),
        "conv1.2.weight": (768, 512, 3, 3), "conv1.2.bias": (768,),
    },
    "regressor": {
        "down_channel.weight": (256, 4608, 1, 1), "down_channel.bias": (256,),
        "feat_smoothing.0.weight": (1024, 768, 3, 3), "feat_smoothing.0.bias": (1024,),
        "feat_smoothing.2.weight": (512, 1024, 3, 3), "feat_smoothing.2.bias": (512,),
        "conv1.0.weight": (256, 512, 3, 3), "conv1.0.bias": (256,),
        "conv_attent.0.weight": (1, 256, 1, 1), "conv_attent.0.bias": (1,),
        "conv.0.weight": (1, 256, 1, 1), "conv.0.bias": (1,),
    },
}


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _default_on_meta(config: ModelConfig | None = None) -> AHIQ:
    """The real architecture with storage-free (meta) tensors: shapes and names without seconds of init."""
    with torch.device("meta"):
        return build_ahiq(config, pretrained_backbones=False)


def test_default_architecture_tensor_table_and_shapes():
    model = _default_on_meta()
    # the released checkpoint's tensor names and shapes (spec §2): what load_heads checks strictly
    assert _shapes(model.deform_net) == SPEC_TABLE["deform_net"]
    assert _shapes(model.regressor) == SPEC_TABLE["regressor"]
    assert model.deform_net.conv1[0].stride == (2, 2) and model.deform_net.conv1[2].stride == (1, 1)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 26e6 < trainable < 28e6  # "about 27 M parameters"
    assert all(not p.requires_grad for p in model.vit.parameters())
    assert all(not p.requires_grad for p in model.cnn.parameters())
    # ViT-B/8 blocks 1-5 and ResNet-50 layer1: what each backbone returns, and what the model returns
    x = torch.empty(2, 3, 224, 224, device="meta")
    assert model.vit(x).shape == (2, 3840, 28, 28)
    assert model.cnn(x).shape == (2, 768, 56, 56)
    assert len(model.vit.model.blocks) == 5  # blocks 6-12 are not even kept
    assert not hasattr(model.cnn, "layer2") and len(model.cnn.stages) == 1
    score, f, w = model(x, x, return_maps=True)
    assert score.shape == (2,) and f.shape == w.shape == (2, 1, 28, 28)


def test_tensor_table_patch16_and_any_crop():
    config = ModelConfig(vit="vit_base_patch16_224.augreg_in21k_ft_in1k")
    model = _default_on_meta(config)
    assert _shapes(model.deform_net) == SPEC_TABLE["deform_net"]
    assert _shapes(model.regressor) == SPEC_TABLE["regressor"]
    assert model.deform_net.conv1[2].stride == (2, 2)
    # the same architecture narrowed runs any multiple-of-32 crop: maps on the 16-pixel grid
    tiny = ModelConfig(**{**TINY.to_dict(), "vit": config.vit})
    torch.manual_seed(0)
    model = build_ahiq(tiny, pretrained_backbones=False).eval()
    assert model.deform_net.conv1[2].stride == (2, 2)
    x = torch.rand(2, 3, 96, 64)
    with torch.no_grad():
        score, f, w = model(x, x.flip(-1), return_maps=True)
    assert score.shape == (2,) and f.shape == (2, 1, 6, 4) and w.shape == (2, 1, 6, 4)


def test_tiny_backbones_run_the_same_code_path(small_model):
    x = torch.rand(2, 3, 64, 96)
    assert small_model.vit(x).shape == (2, 2 * 32, 8, 12)  # blocks 1 and 3 of a 32-wide ViT with patch 8
    assert small_model.cnn(x).shape == (2, 64, 16, 24)  # one bottleneck of 16 -> 64 channels in layer1
    assert len(small_model.vit.model.blocks) == 3  # block 4 is pruned
    assert isinstance(small_model.vit, ViTFeatures) and isinstance(small_model.cnn, ResNetFeatures)


def test_truncated_vit_equals_whole_model_blocks():
    torch.manual_seed(3)
    narrow = {"embed_dim": 48, "depth": 8, "num_heads": 3}
    whole = timm.create_model("vit_base_patch16_224", pretrained=False, **narrow).eval()
    part = timm.create_model("vit_base_patch16_224", pretrained=False, dynamic_img_size=True, **narrow)
    part.load_state_dict(whole.state_dict())
    feats = ViTFeatures(part, blocks=(2, 4, 7))
    outputs = []
    for block in whole.blocks:
        block.register_forward_hook(lambda m, i, o: outputs.append(o))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        whole(x)
    expected = torch.cat([outputs[i][:, 1:] for i in (1, 3, 6)], dim=2).transpose(1, 2).reshape(2, 3 * 48, 14, 14)
    got = feats(x)
    assert got.shape == (2, 144, 14, 14) and len(part.blocks) == 7
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert not got.requires_grad


def test_truncated_resnet_equals_whole_model_stage():
    torch.manual_seed(4)
    narrow = {"layers": (1, 3, 1, 1), "channels": (16, 32, 64, 128), "stem_width": 16}
    whole = timm.create_model("resnet50", pretrained=False, **narrow).eval()
    part = timm.create_model("resnet50", pretrained=False, **narrow)
    part.load_state_dict(whole.state_dict())
    feats = ResNetFeatures(part, stage=2)
    outputs = []
    for block in whole.layer2:
        block.register_forward_hook(lambda m, i, o: outputs.append(o))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        whole(x)
    got = feats(x)
    assert got.shape == (2, 3 * 128, 8, 8) and feats.out_channels == 384 and feats.reduction == 8
    torch.testing.assert_close(got, torch.cat(outputs, 1), rtol=0, atol=1e-5)
    feats.train()
    assert not feats.training and not any(m.training for m in feats.modules())


def test_sampled_deform_conv_equals_torchvision():
    torch.manual_seed(5)
    x = torch.randn(4, 32, 12, 10)
    offset = torch.randn(2, 18, 12, 10) * 4  # many positions fall outside the map
    offset[:, :, 0] = -1.0  # exactly on the border
    offset[:, :, -1] = 0.5
    weight = torch.randn(24, 32, 3, 3) * 0.1
    bias = torch.randn(24)
    ours = deform_conv3x3(x, offset, weight, bias)
    reference = torchvision.ops.deform_conv2d(x, offset.repeat_interleave(2, 0), weight, bias, padding=(1, 1))
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(deform_conv3x3_torchvision(x, offset, weight, bias), reference, rtol=0, atol=0)
    # bf16 values with fp32 positions stay close
    low = deform_conv3x3(x.bfloat16(), offset, weight, bias).float()
    assert (low - reference).abs().max() < 0.05 * reference.abs().max()


def _deform_grads(fn, x, offset, weight, bias, grad):
    leaves = [t.clone().requires_grad_() for t in (x, offset, weight, bias)]
    fn(*leaves).backward(grad)
    return [t.grad for t in leaves]


def _edge_offsets(shape) -> torch.Tensor:
    """Many samples near and past the border: the first row on -1, integer positions (bilinear kinks) in the last
    row, just inside in the first column, zero offsets (border taps exactly at -1 and H or W) at one pixel."""
    offset = torch.randn(shape) * 3
    offset[:, :, 0] = -1.0
    offset[:, :, -1, :] = torch.round(offset[:, :, -1, :])
    offset[:, :, :, 0] = 0.999
    offset[:, :, 4, 4] = 0.0
    return offset


@pytest.mark.parametrize("where", ["inside", "integer", "border", "outside", "edges"])
def test_sampled_deform_conv_gradients_equal_torchvision(where):
    # Integer offsets put samples on pixel centres, on the first row/column outside the map (-1, where
    # torchvision's offset gradient is the next pixel's value) and beyond; "border" adds a hair to them. Two maps
    # share each set of offsets (k = 2), as AHIQ's distorted and reference features do.
    torch.manual_seed(7)
    x = torch.randn(4, 16, 9, 8)
    shape = (2, 18, 9, 8)
    offset = {"inside": lambda: torch.rand(shape) - 0.5, "integer": lambda: torch.randint(-3, 4, shape).float(),
              "border": lambda: torch.randint(-2, 3, shape).float() + torch.randn(shape) * 1e-3,
              "outside": lambda: torch.randn(shape) * 6, "edges": lambda: _edge_offsets(shape)}[where]()
    weight, bias = torch.randn(12, 16, 3, 3) * 0.1, torch.randn(12)
    grad = torch.randn(4, 12, 9, 8)
    ours = _deform_grads(deform_conv3x3, x, offset, weight, bias, grad)
    reference = _deform_grads(deform_conv3x3_torchvision, x, offset, weight, bias, grad)
    for name, got, expected in zip(("input", "offset", "weight", "bias"), ours, reference):
        error = (got - expected).abs().max() / expected.abs().max()
        assert error < 1e-5, f"{name}: {error:.1e}"
    if where == "integer":  # the -1 rule is exercised: samples at coordinate -1 with a non-zero offset gradient
        rows = torch.arange(9).view(1, 1, 9, 1) + torch.arange(3).repeat_interleave(6).view(1, 18, 1, 1) - 1
        cols = torch.arange(8).view(1, 1, 1, 8) + torch.arange(3).repeat(3).repeat_interleave(2).view(1, 18, 1, 1) - 1
        at_minus_one = torch.where(torch.arange(18).view(1, 18, 1, 1) % 2 == 0, rows, cols) + offset == -1
        assert at_minus_one.sum() > 20 and (reference[1][at_minus_one] != 0).sum() > 10


def test_offsets_rewrite_equals_upsample_then_conv():
    torch.manual_seed(6)
    conv = torch.nn.Conv2d(40, 18, 3, 1, 1)
    vit = torch.randn(2, 40, 7, 5)
    for scale in (2, 4):
        expected = conv(F.interpolate(vit, size=(7 * scale, 5 * scale), mode="nearest"))
        kernel, bias = phase_kernels(conv.weight, conv.bias, scale)
        got = F.pixel_shuffle(F.conv2d(vit, kernel, bias, padding=1), scale)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def _spec_restatement(model: AHIQ, dist: torch.Tensor, ref: torch.Tensor):
    """Spec §1 written out with functional ops and torchvision's deform_conv2d, crop by crop."""
    def norm(x):
        return (x - 0.5) / 0.5

    d, r = norm(dist), norm(ref)
    vit_d, vit_r = model.vit(d), model.vit(r)
    cnn_d, cnn_r = model.cnn(d), model.cnn(r)
    p = dict(model.deform_net.named_parameters())
    q = dict(model.regressor.named_parameters())

    def fuse(cnn):
        up = F.interpolate(vit_r, size=cnn.shape[-2:], mode="nearest")
        offset = F.conv2d(up, p["conv_offset.weight"], p["conv_offset.bias"], padding=1)
        x = torchvision.ops.deform_conv2d(cnn, offset, p["deform.weight"], p["deform.bias"], padding=(1, 1))
        x = F.relu(F.conv2d(x, p["conv1.0.weight"], p["conv1.0.bias"], stride=2, padding=1))
        return F.conv2d(x, p["conv1.2.weight"], p["conv1.2.bias"], stride=1, padding=1)

    def down(vit, cnn):
        return F.conv2d(torch.cat((vit, cnn), 1), q["down_channel.weight"], q["down_channel.bias"])

    fd, fr = down(vit_d, fuse(cnn_d)), down(vit_r, fuse(cnn_r))
    x = torch.cat((fd - fr, fd, fr), 1)
    x = F.relu(F.conv2d(x, q["feat_smoothing.0.weight"], q["feat_smoothing.0.bias"], padding=1))
    x = F.conv2d(x, q["feat_smoothing.2.weight"], q["feat_smoothing.2.bias"], padding=1)
    x = F.relu(F.conv2d(x, q["conv1.0.weight"], q["conv1.0.bias"], padding=1))
    f = F.conv2d(x, q["conv.0.weight"], q["conv.0.bias"])
    w = torch.sigmoid(F.conv2d(x, q["conv_attent.0.weight"], q["conv_attent.0.bias"]))
    return (f * w).sum(dim=(2, 3)).squeeze(1) / w.sum(dim=(2, 3)).squeeze(1), f, w


def test_fusion_and_head_equal_spec_restatement(small_model):
    torch.manual_seed(7)
    dist = torch.rand(3, 3, 64, 96)
    ref = (dist + 0.2 * torch.randn_like(dist)).clamp(0, 1)
    with torch.no_grad():
        expected, f_exp, w_exp = _spec_restatement(small_model, dist, ref)
        score, f, w = small_model(dist, ref, return_maps=True)
        via_uint8 = small_model((dist * 255).round().to(torch.uint8), (ref * 255).round().to(torch.uint8))
    assert score.shape == (3,) and f.shape == (3, 1, 8, 12)
    torch.testing.assert_close(score, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(f, f_exp, rtol=0, atol=1e-4)
    torch.testing.assert_close(w, w_exp, rtol=0, atol=1e-5)
    assert expected.std() > 1e-2  # the comparison is not between constants
    assert (via_uint8 - score).abs().max() < 0.05


def test_authors_pattern_matches_at_224(small_model):
    from benchmarks.authors_pattern import AuthorsPattern

    torch.manual_seed(8)
    dist = torch.rand(1, 3, 224, 224)
    ref = (dist + 0.1 * torch.randn_like(dist)).clamp(0, 1)
    with torch.no_grad():
        ours = small_model(dist, ref)
        theirs = AuthorsPattern(small_model).score_crop(dist, ref)
    assert (ours - theirs).abs().max() < 1e-5


def test_torchvision_impl_switch(small_model):
    torch.manual_seed(9)
    dist, ref = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        fast = small_model(dist, ref)
        small_model.deform_net.impl = "torchvision"
        try:
            slow = small_model(dist, ref)
        finally:
            small_model.deform_net.impl = "sampled"
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-5)


def test_imagenet_normalisation_changes_scores(small_model):
    model = AHIQ(small_model.vit, small_model.cnn, ModelConfig(**{**TINY.to_dict(), "normalization": "imagenet"}))
    model.deform_net.load_state_dict(small_model.deform_net.state_dict())
    model.regressor.load_state_dict(small_model.regressor.state_dict())
    x, y = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert (model(x, y) - small_model(x, y)).abs().item() > 1e-4


# ---------------------------------------------------------------------------------------------- ablations
VIT_BY_PATCH = {8: "vit_base_patch8_224", 16: "vit_base_patch16_224"}


def _tiny(**changes) -> ModelConfig:
    return ModelConfig(**{**TINY.to_dict(), **changes})


def _tiny_backbones():
    """The tiny ViT with patch 8 and 16 (blocks 1, 3) and the tiny ResNet at stages 1-4, random weights."""
    from ahiq.models.backbones import build_resnet, build_vit
    from ahiq.models.weights import backbone_source

    vits = {p: build_vit(backbone_source(name, False, seed=0), TINY.vit_blocks, **TINY.vit_kwargs)
            for p, name in VIT_BY_PATCH.items()}
    cnn = backbone_source(TINY.cnn, False, seed=0)
    return vits, {s: build_resnet(cnn, s, **TINY.cnn_kwargs) for s in (1, 2, 3, 4)}


def test_every_architecture_combination_builds_or_is_refused():
    """branches x fusion x pooling x patch x CNN stage: ModelConfig refuses (one line) or the network runs with
    one score per pair and maps on the patch grid; the refusals are exactly the ones that cannot be built."""
    import itertools

    from ahiq.models.ahiq import CHOICES
    from ahiq.utils.errors import UserError

    vits, cnns = _tiny_backbones()
    built, refused = 0, []
    x = torch.rand(2, 3, 32, 64)
    for branches, fusion, pooling, patch, stage in itertools.product(
            CHOICES["branches"], CHOICES["fusion"], CHOICES["pooling"], (8, 16), (1, 2, 3, 4)):
        try:
            cfg = _tiny(vit=VIT_BY_PATCH[patch], cnn_stage=stage, branches=branches, fusion=fusion, pooling=pooling)
        except UserError as err:
            assert len(str(err).splitlines()) == 1
            refused.append((branches, fusion, patch, stage))
            continue
        model = AHIQ(vits[patch] if branches != "cnn" else None, cnns[stage] if branches != "vit" else None, cfg)
        with torch.no_grad():
            score, f, w = model.eval()(x, x.flip(-1), return_maps=True)
        assert score.shape == (2,) and f.shape == w.shape == (2, 1, 32 // patch, 64 // patch)
        assert torch.isfinite(score).all()
        built += 1
    # ViT only with a fusion, and CNN grids that are not 1, 2 or 4 times the patch grid
    impossible = {(b, f, p, s) for b, f, _, p, s in itertools.product(
        CHOICES["branches"], CHOICES["fusion"], CHOICES["pooling"], (8, 16), (1, 2, 3, 4))
        if (b == "vit" and f != "none") or (b != "vit" and (p == 8 and s > 2 or p == 16 and s > 3))}
    assert set(refused) == impossible and built == 2 * (3 * 3 * 2 * 4 - len(impossible))


def test_ablation_parts_equal_their_reference_formulations():
    """Plain conv fusion = deformable fusion with zero offsets; no fusion = 2x2 average; mean pooling = mean
    of f; the CNN-only deformable conv reads offsets from the reference's CNN features."""
    from ahiq.models.ablations import ConvFusion, ResampleFusion
    from ahiq.models.ahiq import DeformFusion, PatchScoreHead

    torch.manual_seed(4)
    cnn = torch.randn(4, 16, 8, 8)
    deform = DeformFusion(vit_channels=8, cnn_channels=16, scale=2, hidden=12)
    plain = ConvFusion(cnn_channels=16, scale=2, hidden=12)
    with torch.no_grad():
        plain.conv.weight.copy_(deform.deform.weight)
        plain.conv.bias.copy_(deform.deform.bias)
        plain.conv1.load_state_dict(deform.conv1.state_dict())
        zero = torch.zeros(2, 18, 8, 8)
        assert torch.allclose(plain(cnn), deform(cnn, zero), atol=1e-5)
        assert torch.equal(ResampleFusion(2)(cnn), F.avg_pool2d(cnn, 2))
    head = PatchScoreHead(in_channels=24, pooling="mean")
    assert not hasattr(head, "conv_attent")
    pair = torch.randn(3, 2, 24, 4, 4)
    score, f, w = head.compare(head.project(pair[:, 0]), head.project(pair[:, 1]))
    assert torch.allclose(score, f.mean(dim=(1, 2, 3))) and torch.equal(w, torch.ones_like(f))
    vits, cnns = _tiny_backbones()
    cnn_only = AHIQ(None, cnns[1], _tiny(branches="cnn"))
    assert cnn_only.deform_net.conv_offset.in_channels == cnns[1].out_channels
    assert cnn_only.regressor.down_channel.in_channels == cnns[1].out_channels
    vit_only = AHIQ(vits[8], None, _tiny(branches="vit", fusion="none"))
    assert vit_only.regressor.down_channel.in_channels == vits[8].out_channels
    assert not list(vit_only.deform_net.parameters())


def test_reference_side_reused_equals_forward(small_model):
    torch.manual_seed(10)
    ref = torch.rand(2, 3, 64, 96)
    index = torch.tensor([0, 1, 1, 0, 1])
    dist = (ref[index] + 0.2 * torch.randn(5, 3, 64, 96)).clamp(0, 1)
    with torch.no_grad():
        expected = small_model(dist, ref[index], return_maps=True)
        side = small_model.encode_reference(ref)
        got = small_model.score_distorted(dist, side.select(index), return_maps=True)
    terms = small_model.regressor.down_channel.out_channels
    assert len(side) == 2 and side.nbytes == 2 * (18 * 16 * 24 + terms * 8 * 12) * 4
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-6)  # scores: fp32 rounding
    for a, b in zip(got[1:], expected[1:]):  # maps f (values near 1) and w
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert expected[0].std() > 1e-3
    with pytest.raises(ValueError, match="does not match a reference side"):
        small_model.score_distorted(dist, side)


@pytest.mark.parametrize("changes", [dict(branches="cnn"), dict(fusion="conv"), dict(branches="vit", fusion="none"),
                                     dict(pooling="mean")])
def test_reference_side_reused_equals_forward_in_the_ablations(changes):
    vits, cnns = _tiny_backbones()
    cfg = _tiny(**changes)
    model = AHIQ(vits[8] if cfg.branches != "cnn" else None, cnns[1] if cfg.branches != "vit" else None, cfg).eval()
    torch.manual_seed(11)
    ref = torch.rand(2, 3, 32, 64)
    index = torch.tensor([1, 0, 1])
    dist = (ref[index] + 0.2 * torch.randn(3, 3, 32, 64)).clamp(0, 1)
    with torch.no_grad():
        expected = model(dist, ref[index])
        got = model.score_distorted(dist, model.encode_reference(ref).select(index))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_forward_runs_both_sides_in_one_call_with_the_same_gradients():
    """forward fuses and projects a pair's two crops in one call (the deformable conv with k = 2 maps per
    offset); its scores and the heads' gradients equal the two-call path (the reference's terms, then the distorted's)."""
    from tests.conftest import tiny_model

    torch.manual_seed(12)
    ref = torch.rand(3, 3, 64, 64)
    dist = (ref + 0.2 * torch.randn(3, 3, 64, 64)).clamp(0, 1)
    grads, scores = [], []
    for fused in (True, False):
        model = tiny_model()
        if fused:
            score = model(dist, ref)
        else:
            vit, cnn = model.features(torch.cat((dist, ref)))
            offset = model.offsets(vit[3:], cnn[3:])
            score = model.regressor.compare(model.terms(vit[:3], cnn[:3], offset), model.terms(vit[3:], cnn[3:], offset))[0]
        (score * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
        scores.append(score.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(scores[0], scores[1], rtol=0, atol=1e-6)
    assert grads[0].keys() == grads[1].keys() and any(k.startswith("deform_net.conv_offset") for k in grads[0])
    for name in grads[0]:
        scale = max(grads[1][name].abs().max().item(), 1e-3)
        assert (grads[0][name] - grads[1][name]).abs().max().item() / scale < 1e-5, name
