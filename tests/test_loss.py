"""AHIQ as a loss: gradients to the images, crops, reductions, a frozen network, score and score map."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from ahiq.data.images import read_image
from ahiq.engine.loss import AHIQLoss
from ahiq.engine.metric import AHIQMetric
from ahiq.engine.scoring import score_pairs
from ahiq.models.ahiq import build_ahiq
from ahiq.models.checkpoint import save_checkpoint
from tests.conftest import TINY, random_pair_images, randomise_heads, shared_path
from tests.weight_files import save_state_dict
from ahiq.utils.errors import UserError


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """Backbone weight files and one of our checkpoints (architecture in its metadata) for the tiny AHIQ,
    and the model they make."""
    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(31)
    save_state_dict(timm.create_model("vit_base_patch8_224", pretrained=False, **TINY.vit_kwargs),
                    folder / "vit.safetensors")
    save_state_dict(timm.create_model("resnet50", pretrained=False, **TINY.cnn_kwargs), folder / "cnn.pth")
    model = build_ahiq(TINY, vit_weights=str(folder / "vit.safetensors"), cnn_weights=str(folder / "cnn.pth"))
    randomise_heads(model)
    save_checkpoint(folder / "tiny.pth", model)
    return folder, model.eval()


def tiny_loss(tiny_files, **kwargs) -> AHIQLoss:
    folder, _ = tiny_files
    return AHIQLoss(folder / "tiny.pth", vit_weights=str(folder / "vit.safetensors"),
                    cnn_weights=str(folder / "cnn.pth"), device="cpu", **kwargs)


def pair(b: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ref = F.avg_pool2d(torch.rand(b, 3, h, w, generator=gen), 5, 1, 2)
    return (ref + 0.1 * torch.randn(ref.shape, generator=gen)).clamp(0, 1), ref


def crops_seen(loss: AHIQLoss) -> list[torch.Tensor]:
    """Record the batches the ViT receives (distorted and reference crops interleaved)."""
    seen: list[torch.Tensor] = []
    loss.model.vit.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    return seen


def test_backbones_build_no_graph_unless_asked(tiny_files):
    _, model = tiny_files
    dist, ref = pair(1, 64, 64)
    dist.requires_grad_(True)
    model(dist, ref).sum().backward()
    assert dist.grad is None  # scoring and head training: no graph through the backbones
    model.input_gradients(True)
    try:
        model(dist, ref).sum().backward()
    finally:
        model.input_gradients(False)
    assert dist.grad is not None and dist.grad.abs().sum() > 0
    assert all(p.grad is None for p in list(model.vit.parameters()) + list(model.cnn.parameters()))


def test_reductions_and_a_frozen_network(tiny_files):
    loss = tiny_loss(tiny_files, crops="grid:4", crop_size=64, reduction="none")
    dist, ref = pair(3, 96, 80)
    per_image = loss(dist, ref)
    assert per_image.shape == (3,)
    torch.testing.assert_close(per_image, 1 - loss.score(dist, ref), rtol=0, atol=1e-6)
    assert per_image.std() > 1e-4  # different images, different losses
    loss.reduction = "mean"
    torch.testing.assert_close(loss(dist, ref), per_image.mean(), rtol=0, atol=1e-6)
    loss.reduction = "sum"
    torch.testing.assert_close(loss(dist, ref), per_image.sum(), rtol=0, atol=1e-6)
    assert not any(p.requires_grad for p in loss.parameters())
    parent = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), loss)
    parent.train()
    assert parent[0].training and loss.training and not any(m.training for m in loss.model.modules())
    with pytest.raises(UserError, match="reduction=max"):
        tiny_loss(tiny_files, reduction="max", crop_size=64)
    for bad, message in (({"crop_size": 100}, "crop_size=100: must be a positive multiple of 32"),
                         ({"precision": "fp16"}, "precision=fp16: use one of"), ({"crops": "six"}, "crops=six")):
        with pytest.raises(UserError, match=message):  # the loss and the library metric check alike
            tiny_loss(tiny_files, **bad)
        with pytest.raises(UserError, match=message):
            AHIQMetric(tiny_files[1], **bad)
    with pytest.raises(ValueError, match="smaller than the crop"):
        loss(dist[..., :60], ref[..., :60])


@pytest.mark.parametrize("crops", ["center", "five", "random:20"])
def test_an_image_of_crop_size_costs_one_crop(tiny_files, crops):
    loss = tiny_loss(tiny_files, crops=crops, crop_size=64)
    seen = crops_seen(loss)
    dist, ref = pair(2, 64, 64)
    dist.requires_grad_(True)
    ref.requires_grad_(crops == "center")
    loss(dist, ref).backward()
    assert [x.shape[0] for x in seen] == [2 * 2]  # one crop per pair, distorted and reference
    assert dist.grad.abs().sum() > 0
    assert (ref.grad.abs().sum() > 0) if crops == "center" else ref.grad is None


def test_checkpointing_changes_nothing_but_memory(tiny_files):
    dist, ref = pair(2, 64, 96, seed=6)
    grads = []
    for checkpointing in (False, True):
        loss = tiny_loss(tiny_files, crops="grid:2", crop_size=64, checkpointing=checkpointing)
        image = dist.clone().requires_grad_(True)
        loss(image, ref).backward()
        grads.append(image.grad)
        assert loss.model.checkpoint_fusion is checkpointing and loss.model.vit.model.grad_checkpointing is checkpointing
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-7)
    assert grads[0].abs().max() > 1e-4


def test_random_crops_follow_torch_rng_and_match_between_dist_and_ref(tiny_files):
    loss = tiny_loss(tiny_files, crops="random:3", crop_size=64)
    seen = crops_seen(loss)
    _, ref = pair(2, 130, 100)
    torch.manual_seed(5)
    first = loss(ref.clone(), ref)
    torch.manual_seed(5)
    again = loss(ref.clone(), ref)
    third = loss(ref.clone(), ref)
    assert first.item() == again.item() and not torch.equal(seen[0], seen[2])
    assert torch.equal(seen[0], seen[1])
    for both in seen:  # dist is ref: equal crops mean equal windows
        assert both.shape[0] == 2 * 2 * 3 and torch.equal(both[0::2], both[1::2])
    assert third.item() != first.item()


def test_score_map_is_the_save_maps_map(tiny_files, tmp_path):
    random_pair_images(tmp_path, [("A0001_00_00.bmp", "A0001.bmp")], 96, 128)
    pairs = [(tmp_path / "dist" / "A0001_00_00.bmp", tmp_path / "ref" / "A0001.bmp")]
    _, model = tiny_files
    [expected] = list(score_pairs(model, pairs, "grid:6", 64, with_maps=True, progress=False))
    loss = tiny_loss(tiny_files, crops="grid:6", crop_size=64)
    to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255  # noqa: E731
    dist, ref = to_t(read_image(pairs[0][0])), to_t(read_image(pairs[0][1]))
    with torch.no_grad():
        got = loss.score_map(dist, ref)
    assert got.shape == (1, 1, 96, 128)
    assert np.abs(got[0, 0].numpy() - expected.score_map).max() < 1e-4
    assert abs(loss.score(dist, ref).item() - expected.score) < 1e-5
    assert got.std() > 1e-3


def test_finite_difference_of_the_loss_fp64(tiny_files):
    loss = tiny_loss(tiny_files, crops="grid:2", crop_size=64).double()
    dist, ref = (x.double() for x in pair(2, 64, 96, seed=3))
    dist.requires_grad_(True)
    grad, = torch.autograd.grad(loss(dist, ref), dist)
    direction = torch.randn(dist.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    eps = 1e-6  # small: a larger step crosses ReLU/max-pool kinks, whose one-sided slopes the difference averages
    with torch.no_grad():
        numeric = (loss(dist + eps * direction, ref) - loss(dist - eps * direction, ref)) / (2 * eps)
    analytic = (grad * direction).sum()
    assert abs(analytic.item()) > 1e-6
    assert abs(numeric.item() - analytic.item()) <= 1e-2 * abs(analytic.item())


def test_real_blurred_image_gets_better_and_the_network_stays(tiny_files, tmp_path):
    """Done-when of issue 16 on a real KADID-10k reference and its blurred copy (type 01, level 5)."""
    from ahiq.commands.score import main as score_main

    images = shared_path("data", "mini", "KADID-10k-mini", "images")
    to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255  # noqa: E731
    ref, blurred = to_t(read_image(images / "I01.png")), to_t(read_image(images / "I01_01_05.png"))
    loss = tiny_loss(tiny_files, crops="center", crop_size=128)  # 128 keeps it quick; any multiple of 32 works
    before = {k: v.clone() for k, v in loss.state_dict().items()}

    image = blurred.clone().requires_grad_(True)
    loss(image, ref).backward()
    assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0

    optimiser = torch.optim.Adam([image], lr=0.01)
    losses = []
    for _ in range(15):
        optimiser.zero_grad()
        value = loss(image, ref)
        value.backward()
        optimiser.step()
        with torch.no_grad():
            image.clamp_(0, 1)
        losses.append(value.item())
    assert loss(image, ref).item() < losses[0]
    assert all(torch.equal(before[k], v) for k, v in loss.state_dict().items())

    folder = tiny_files[0]
    out = tmp_path / "scores.csv"
    score_main(["--ref", str(images / "I01.png"), "--dist", str(images / "I01_01_05.png"), "--crops", "center",
                "--crop_size", "128", "--checkpoint", str(folder / "tiny.pth"), "--vit_weights",
                str(folder / "vit.safetensors"), "--cnn_weights", str(folder / "cnn.pth"), "--device", "cpu",
                "--output", str(out), "--quiet"])
    [row] = list(csv.DictReader(out.open()))
    assert abs(loss.score(blurred, ref).item() - float(row["score"])) <= 1e-4


def test_optimize_image_example_raises_the_score_monotonically(tiny_files, tmp_path):
    from examples.optimize_image import main

    random_pair_images(tmp_path, [("A0001_00_00.bmp", "A0001.bmp")], 96, 128)
    folder = tiny_files[0]
    out = tmp_path / "better.png"
    scores = main(["--ref", str(tmp_path / "ref" / "A0001.bmp"), "--blur", "2", "--noise", "0.05", "--steps", "6",
                   "--crops", "grid:2", "--crop_size", "64", "--checkpoint", str(folder / "tiny.pth"),
                   "--vit_weights", str(folder / "vit.safetensors"), "--cnn_weights", str(folder / "cnn.pth"),
                   "--device", "cpu", "--output", str(out)])
    assert len(scores) == 7 and all(b >= a for a, b in zip(scores, scores[1:])) and scores[-1] > scores[0]
    assert read_image(out).shape == (96, 128, 3)


def test_optimize_image_example_keeps_a_16_bit_reference_at_full_depth(tiny_files, tmp_path):
    import cv2

    from examples.optimize_image import main

    random_pair_images(tmp_path, [("A0001_00_00.bmp", "A0001.bmp")], 64, 64)
    ref8 = cv2.imread(str(tmp_path / "ref" / "A0001.bmp"))
    ref16 = ref8.astype(np.uint16) * 257 + np.random.default_rng(0).integers(0, 257, ref8.shape, dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "ref16.png"), ref16)
    folder, out = tiny_files[0], tmp_path / "better16.png"
    scores = main(["--ref", str(tmp_path / "ref16.png"), "--blur", "2", "--steps", "3", "--crops", "center",
                   "--crop_size", "64", "--checkpoint", str(folder / "tiny.pth"), "--vit_weights",
                   str(folder / "vit.safetensors"), "--cnn_weights", str(folder / "cnn.pth"), "--device", "cpu",
                   "--output", str(out)])
    assert len(scores) == 4 and scores[-1] >= scores[0]
    written = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint16 and written.shape == (64, 64, 3)
    assert len(np.unique(written % 257)) > 1  # values between the 8-bit levels: not an 8-bit image scaled up


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run benchmarks/gpu_check.sh)")
def test_loss_gradient_on_cuda_equals_cpu(tiny_files):
    dist, ref = pair(2, 64, 96, seed=8)
    grads = []
    for device in ("cpu", "cuda"):
        loss = tiny_loss(tiny_files, crops="grid:2", crop_size=64)
        loss.to(device)
        image = dist.to(device).requires_grad_(True)
        loss(image, ref.to(device)).backward()
        grads.append(image.grad.cpu())
    assert (grads[1] - grads[0]).abs().max() <= 1e-4 * grads[0].abs().max()
