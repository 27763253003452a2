"""Backbone weights: local files in each format, the hub-cache folder, and the offline error message."""
from __future__ import annotations

import subprocess
import sys

import pytest
import timm
import torch

from ahiq.models import weights
from ahiq.models.weights import backbone_source, create_backbone
from tests.conftest import ROOT
from tests.weight_files import save_state_dict, vit_to_jax_npz
from ahiq.utils.errors import UserError

VIT = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
CNN = "resnet18.a1_in1k"
# Narrowed through timm keyword arguments (as ModelConfig.vit_kwargs/cnn_kwargs do): the loading paths are the
# same, the files small.
VIT_KW = {"depth": 2}
CNN_KW = {"channels": (16, 32, 64, 128)}


def create_timm_model(name: str, pretrained: bool, weights_file=None, weights_arg: str = "", **kwargs):
    """A timm model with weights from a file, by tag, or random (seed 0), through the one public path."""
    return create_backbone(backbone_source(name, pretrained, weights_file, 0), weights_arg, **kwargs)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".pth", ".bin"])
def test_vit_weight_file_formats(tmp_path, suffix):
    torch.manual_seed(11)
    source = timm.create_model(VIT, pretrained=False, **VIT_KW)
    path = tmp_path / f"vit{suffix}"
    (vit_to_jax_npz if suffix == ".npz" else save_state_dict)(source, path)
    loaded = create_timm_model(VIT, pretrained=True, weights_file=path, **VIT_KW)
    _same_weights(source, loaded)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".bin"])
def test_resnet_weight_file_formats(tmp_path, suffix):
    torch.manual_seed(12)
    source = timm.create_model(CNN, pretrained=False, **CNN_KW)
    path = tmp_path / f"cnn{suffix}"
    save_state_dict(source, path)
    _same_weights(source, create_timm_model(CNN, pretrained=True, weights_file=path, **CNN_KW))


def test_weights_of_the_wrong_backbone_are_refused(tmp_path):
    path = tmp_path / "r18.safetensors"
    save_state_dict(timm.create_model(CNN, pretrained=False, **CNN_KW), path)
    with pytest.raises(UserError, match="do not fit") as err:
        create_timm_model("resnet50.a1_in1k", pretrained=True, weights_file=path, **CNN_KW)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="do not fit"):  # the right name, another width
        create_timm_model(CNN, pretrained=True, weights_file=path)


def test_unknown_timm_keyword_argument_is_a_user_error():
    with pytest.raises(UserError, match=r"resnet18.a1_in1k with \{'depth': 2\}: .*unexpected keyword argument 'depth'"):
        create_timm_model(CNN, pretrained=False, depth=2)


def test_default_backbones_folder_is_used(tmp_path, monkeypatch):
    torch.manual_seed(13)
    source = timm.create_model(CNN, pretrained=False, **CNN_KW)
    save_state_dict(source, tmp_path / f"{CNN}.safetensors")
    monkeypatch.setattr(weights, "DEFAULT_WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(weights.find_local_weights, "__defaults__", (tmp_path,))
    _same_weights(source, create_timm_model(CNN, pretrained=True, **CNN_KW))


def test_offline_pretrained_request_fails_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty hub cache
    monkeypatch.setattr(weights.find_local_weights, "__defaults__", (tmp_path,))
    with pytest.raises(UserError) as err:
        create_timm_model(CNN, pretrained=True, weights_arg="cnn_weights")
    message = str(err.value)  # from Python the message names the argument; on the command line, the flag
    assert "download.sh" in message and "cnn_weights=FILE" in message and "HF_HUB_OFFLINE" in message
    assert "--cnn_weights FILE" in err.value.for_cli() and "--" not in message
    assert "\n" not in message


def test_random_weights_are_announced(capsys):
    create_timm_model(CNN, pretrained=False, **CNN_KW)
    assert "RANDOM weights" in capsys.readouterr().err


def test_score_py_offline_exits_with_one_line(tmp_path):
    from tests.conftest import random_pair_images

    random_pair_images(tmp_path, [("A0001_00_00.bmp", "A0001.bmp")], 64, 64)
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hub"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "score.py", "--ref", str(tmp_path / "ref"), "--dist",
                           str(tmp_path / "dist"), "--crop_size", "64", "--device", "cpu", "--checkpoint", "none",
                           "--vit", "vit_tiny_patch16_224.augreg_in21k_ft_in1k", "--patch_size", "16"],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot get pretrained weights"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_score_py_stops_in_seconds_when_the_hub_is_unreachable(tmp_path):
    import socket
    import time

    from tests.conftest import random_pair_images

    if any(weights.find_local_weights(n) for n in (weights.DEFAULT_VIT, weights.DEFAULT_CNN)):
        pytest.skip("backbone weights are in checkpoints/backbones/ on this machine")
    with socket.socket() as sock:  # a local port nobody listens on: the hub "cannot be reached"
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    random_pair_images(tmp_path, [("A0001_00_00.bmp", "A0001.bmp")], 64, 64)
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HOME": str(tmp_path / "hub"), "PATH": "/usr/bin:/bin"}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "score.py", "--ref", str(tmp_path / "ref"), "--dist",
                           str(tmp_path / "dist"), "--crop_size", "64", "--device", "cpu", "--checkpoint", "none"],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    elapsed = time.monotonic() - start
    start = time.monotonic()  # start-up alone (imports: ~4 s idle, far more on a loaded machine) is not the wait
    subprocess.run([sys.executable, "-c", "import ahiq.engine.session"], cwd=ROOT, env=env, check=True, timeout=300)
    startup = time.monotonic() - start
    assert proc.returncode == 2 and elapsed - startup < 10, (elapsed, startup, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr and "Retrying" not in proc.stderr, proc.stderr
    message = lines[0]
    assert f"127.0.0.1:{port}" in message and weights.DEFAULT_VIT in message and weights.DEFAULT_CNN in message
    for way in ("sh download.sh", "--vit_weights FILE", "--cnn_weights FILE", "hub cache", "--pretrained_backbones false"):
        assert way in message, way


def test_hub_reachability_is_checked_once_and_quickly(monkeypatch):
    import socket

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "unreachable", weights.unreachable.__wrapped__)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as server:  # a listening local port stands for a reachable hub
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert weights.hub_offline_reason() is None
    assert "cannot be reached" in weights.hub_offline_reason()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert weights.hub_offline_reason() == "HF_HUB_OFFLINE is set"
