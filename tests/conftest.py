"""Shared test setup: repo root on sys.path, offline hub, tiny random-weight models.

Most tests use :data:`TINY`: the default timm names (ViT-B/8 tag, ResNet-50 tag) made small through
``ModelConfig.vit_kwargs/cnn_kwargs`` (a narrow 4-block ViT with patch 8 read at blocks 1 and 3, a ResNet-50
with one narrow bottleneck per stage) and a narrow head and fusion (``head_kwargs/fusion_kwargs``), so every
test runs the real code path in milliseconds. The default
architecture itself is built on the meta device (shapes and tensor names, no weights) in ``test_models.py``.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# The tests test this clone, whatever else is installed: its root first on the path here and in every process the
# tests start (`import ahiq` finds ROOT/ahiq, which maps the clone's floors).
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
import ahiq  # noqa: E402

if Path(ahiq.__file__).resolve().parent != ROOT / "ahiq":  # pragma: no cover
    raise RuntimeError(f"`import ahiq` found {ahiq.__file__}, not this clone's {ROOT / 'ahiq'}")
from ahiq.utils.io import shared_folder  # noqa: E402

# The team's shared folder (spec, real label files, mini datasets): $AHIQ_SHARED, else ../shared.
SHARED = shared_folder()
SHARED_HINT = "set AHIQ_SHARED to the shared folder (default: ../shared beside the project)"
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download; hub look-ups fail fast
# The released checkpoint's user cache: a folder of the tests' own, never the user's (models.hub).
os.environ["AHIQ_HOME"] = tempfile.mkdtemp(prefix="ahiq-tests-home-")
# Tiny models: one thread is as fast as two here and does not slow down on a shared, busy machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")  # for the scripts tests start as processes, too
torch.set_num_threads(1)

from ahiq.models.ahiq import ModelConfig  # noqa: E402

TINY_VIT_KWARGS = {"embed_dim": 32, "depth": 4, "num_heads": 2}
TINY_CNN_KWARGS = {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "stem_width": 16}
TINY_HEAD_KWARGS = {"channels": 16, "hidden": 32, "smoothed": 24}
TINY_FUSION_KWARGS = {"hidden": 24}
TINY = ModelConfig(vit_blocks=(1, 3), vit_kwargs=TINY_VIT_KWARGS, cnn_kwargs=TINY_CNN_KWARGS,
                   head_kwargs=TINY_HEAD_KWARGS, fusion_kwargs=TINY_FUSION_KWARGS)
# The same architecture as command-line flags of train.py / test.py / score.py.
TINY_ARGS = ["--vit_blocks", "1,3", "--vit_kwargs", json.dumps(TINY_VIT_KWARGS), "--cnn_kwargs",
             json.dumps(TINY_CNN_KWARGS), "--head_kwargs", json.dumps(TINY_HEAD_KWARGS), "--fusion_kwargs",
             json.dumps(TINY_FUSION_KWARGS)]


def shared_path(*parts: str) -> Path:
    """A path under the shared folder, or skip the test when the project is cloned alone."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present; {SHARED_HINT}")
    return path


def tiny_model(seed: int = 0, config: ModelConfig = TINY):
    """A :data:`TINY` AHIQ network with seeded random backbones and spread-out random heads, in eval mode."""
    from ahiq.models.ahiq import build_ahiq

    torch.manual_seed(seed)
    model = build_ahiq(config, pretrained_backbones=False)
    randomise_heads(model)
    return model.eval()


@pytest.fixture(scope="session")
def small_model():
    """The :data:`TINY` architecture with seeded random weights (heads whose scores spread)."""
    return tiny_model()


def randomise_heads(model) -> None:
    """Seeded normal weights of variance 3 / fan_in and small biases (0.1): PyTorch's default init makes
    near-constant scores; with these the tiny model's scores spread over ~0.2 between pairs, while bf16
    autocast stays within ~0.005 of fp32 (large random biases would make the head cancel large numbers)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in list(model.deform_net.named_parameters()) + list(model.regressor.named_parameters()):
            scale = (3.0 / p[0].numel()) ** 0.5 if p.dim() > 1 else 0.1
            p.copy_(torch.randn(p.shape, generator=gen) * scale * (0.3 if "offset" in name else 1.0))


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
    """An authors'-format checkpoint (``ahiq.pth``, no metadata: the architecture comes from
    :data:`TINY_ARGS`) and backbone weight files (``vit.safetensors``, ``cnn.pth``) holding seeded random
    weights of the :data:`TINY` backbones, and the AHIQ model they make."""
    import timm

    from ahiq.models.ahiq import build_ahiq
    from tests.weight_files import save_state_dict

    folder = tmp_path_factory.mktemp("authors")
    torch.manual_seed(21)
    save_state_dict(timm.create_model("vit_base_patch8_224", pretrained=False, **TINY.vit_kwargs),
                    folder / "vit.safetensors")
    save_state_dict(timm.create_model("resnet50", pretrained=False, **TINY.cnn_kwargs), folder / "cnn.pth")
    model = build_ahiq(TINY, pretrained_backbones=True, vit_weights=str(folder / "vit.safetensors"),
                       cnn_weights=str(folder / "cnn.pth"))
    randomise_heads(model)
    torch.save({"epoch": 32, "regressor_model_state_dict": model.regressor.state_dict(),
                "deform_net_model_state_dict": model.deform_net.state_dict(), "optimizer_state_dict": {},
                "scheduler_state_dict": {}, "loss": 0.0}, folder / "ahiq.pth")
    return folder, model.eval()


def run_main(main, argv: list[str], capsys) -> SimpleNamespace:
    """Call a script's ``main(argv)`` in this process, like running it: ``returncode`` (0, or the code it
    exits with), ``stdout``, ``stderr``, and ``value`` (what main returned)."""
    capsys.readouterr()
    value, code = None, 0
    try:
        value = main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err, value=value)


def pytest_runtest_logreport(report) -> None:
    """With ``AHIQ_SKIPPED_SHARED`` set to a file, list there each test skipped for want of the shared folder
    (CI runs the suite without it, then only those tests with it)."""
    listing = os.environ.get("AHIQ_SKIPPED_SHARED")
    if listing and report.skipped and SHARED_HINT in str(report.longrepr) and not os.environ.get("PYTEST_XDIST_WORKER"):
        with open(listing, "a") as fh:
            fh.write(report.nodeid + "\n")
