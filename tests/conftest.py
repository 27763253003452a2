"""Shared test setup: repo root on sys.path, offline hub, small random-weight models."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download; hub look-ups fail fast
torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test when the project is cloned alone."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (../shared is only beside the project in the team's checkout)")
    return path


@pytest.fixture(scope="session")
def small_model():
    """Default architecture (ViT-B/8 blocks 1-5, ResNet-50 layer1) with seeded random weights."""
    from models.ahiq import build_ahiq

    torch.manual_seed(0)
    model = build_ahiq(pretrained_backbones=False)
    _randomise_heads(model)
    return model.eval()


def _randomise_heads(model) -> None:
    # PyTorch's default init makes near-constant scores; larger weights make score differences visible.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in list(model.deform_net.named_parameters()) + list(model.regressor.named_parameters()):
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / fan_in) ** 0.5 * (0.3 if "offset" in name else 1.0))


def random_pair_images(folder: Path, names: list[tuple[str, str]], height: int, width: int, seed: int = 0) -> None:
    """Write reference/distorted BMPs named as given (``(dist_name, ref_name)``), noise of growing strength."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    (folder / "ref").mkdir(parents=True, exist_ok=True)
    (folder / "dist").mkdir(parents=True, exist_ok=True)
    refs = {}
    for k, (dist_name, ref_name) in enumerate(names):
        if ref_name not in refs:
            base = cv2.GaussianBlur(rng.random((height, width, 3)).astype(np.float32), (0, 0), 3) * 255
            refs[ref_name] = np.clip(base * 2 - 128, 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / "ref" / ref_name), refs[ref_name])
        noisy = refs[ref_name] + rng.normal(0, 5 + 10 * k, refs[ref_name].shape)
        cv2.imwrite(str(folder / "dist" / dist_name), np.clip(noisy, 0, 255).astype(np.uint8))


@pytest.fixture(scope="session")
def authors_files(tmp_path_factory):
    """An authors'-format checkpoint (``ahiq.pth``) and backbone weight files (``vit.safetensors``,
    ``cnn.pth``) holding seeded random weights, and the AHIQ model they make."""
    import timm

    from models.ahiq import build_ahiq
    from tests.weight_files import save_state_dict

    folder = tmp_path_factory.mktemp("authors")
    torch.manual_seed(21)
    save_state_dict(timm.create_model("vit_base_patch8_224", pretrained=False), folder / "vit.safetensors")
    save_state_dict(timm.create_model("resnet50", pretrained=False), folder / "cnn.pth")
    model = build_ahiq(pretrained_backbones=True, vit_weights=str(folder / "vit.safetensors"),
                       cnn_weights=str(folder / "cnn.pth"))
    _randomise_heads(model)
    torch.save({"epoch": 32, "regressor_model_state_dict": model.regressor.state_dict(),
                "deform_net_model_state_dict": model.deform_net.state_dict(), "optimizer_state_dict": {},
                "scheduler_state_dict": {}, "loss": 0.0}, folder / "ahiq.pth")
    return folder, model.eval()
