"""Checkpoints: the authors' format, pyiqa's mirror, ours, round trips and clear errors."""
from __future__ import annotations

import pytest
import torch

from ahiq.models.checkpoint import (DEFORM_KEY, REGRESSOR_KEY, checkpoint_dict, load_heads, load_model, read_checkpoint,
                                    save_checkpoint)
from ahiq.utils.errors import UserError


def _authors_file(model, path):
    """What the authors' train.py writes (and what pyiqa downloads)."""
    torch.save({"epoch": 32, "regressor_model_state_dict": model.regressor.state_dict(),
                "deform_net_model_state_dict": model.deform_net.state_dict(),
                "optimizer_state_dict": {"state": {}, "param_groups": []},
                "scheduler_state_dict": {"T_max": 50}, "loss": 0.01}, path)


def _equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_round_trip_ours_authors_ours(small_model, tmp_path):
    ours = tmp_path / "ours.pth"
    save_checkpoint(ours, small_model, {"score_norm": {"kind": "minmax", "lo": 900.0, "hi": 1850.0}}, epoch=3)
    raw = torch.load(ours, weights_only=True)
    assert set(raw) == {DEFORM_KEY, REGRESSOR_KEY, "ahiq", "epoch"}
    assert raw["ahiq"]["model_config"]["vit"] == "vit_base_patch8_224.augreg_in21k_ft_in1k"
    # The authors' loader only needs their two dict names: strip ours down to their format.
    authors = tmp_path / "authors.pth"
    torch.save({k: raw[k] for k in (DEFORM_KEY, REGRESSOR_KEY)}, authors)
    deform, regressor, meta = read_checkpoint(authors)
    assert meta == {}
    _equal(deform, small_model.deform_net.state_dict())
    _equal(regressor, small_model.regressor.state_dict())
    # ... and back into ours
    again = tmp_path / "again.pth"
    fresh = type(small_model)(small_model.vit, small_model.cnn, small_model.config)
    load_heads(fresh, deform, regressor)
    save_checkpoint(again, fresh)
    d2, r2, meta2 = read_checkpoint(again)
    _equal(d2, deform)
    _equal(r2, regressor)
    assert meta2["model_config"] == small_model.config.to_dict()


def test_authors_release_format_loads(small_model, tmp_path):
    path = tmp_path / "AHIQ_vit_p8_epoch33.pth"
    _authors_file(small_model, path)
    deform, regressor, meta = read_checkpoint(path)
    _equal(deform, small_model.deform_net.state_dict())
    _equal(regressor, small_model.regressor.state_dict())


@pytest.mark.parametrize("nest", ["params", None])
def test_pyiqa_flat_format_loads(small_model, tmp_path, nest):
    flat = {f"deform_net.{k}": v for k, v in small_model.deform_net.state_dict().items()}
    flat.update({f"regressor.{k}": v for k, v in small_model.regressor.state_dict().items()})
    flat["vit.cls_token"] = torch.zeros(1, 1, 768)  # backbone tensors in pyiqa's files are ignored
    path = tmp_path / "AHIQ_vit_p8_epoch33-da3ea303.pth"
    torch.save({nest: flat} if nest else flat, path)
    deform, regressor, _ = read_checkpoint(path)
    _equal(deform, small_model.deform_net.state_dict())
    _equal(regressor, small_model.regressor.state_dict())


def test_mismatched_tensors_are_listed_in_one_error(small_model, tmp_path):
    deform = dict(small_model.deform_net.state_dict())
    deform["deform.weight"] = torch.zeros(64, 64, 5, 5)
    del deform["conv1.0.bias"]
    regressor = dict(small_model.regressor.state_dict(), extra=torch.zeros(1))
    with pytest.raises(UserError) as err:
        load_heads(small_model, deform, regressor, tmp_path / "x.pth")
    msg = str(err.value)
    assert "deform_net.conv1.0.bias missing" in msg and "regressor.extra unexpected" in msg
    assert "deform_net.deform.weight has shape (64, 64, 5, 5), expected (64, 64, 3, 3)" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("content", ["not a checkpoint", {"weights": {"a": 1}}])
def test_files_that_are_not_ahiq_checkpoints(tmp_path, content):
    path = tmp_path / "bad.pth"
    if isinstance(content, str):
        path.write_text(content)
    else:
        torch.save(content, path)
    with pytest.raises(UserError, match="bad.pth: not"):
        read_checkpoint(path)
    with pytest.raises(UserError, match="not found"):
        read_checkpoint(tmp_path / "missing.pth")


def test_load_model_rebuilds_architecture_from_metadata(tmp_path):
    from ahiq.models.ahiq import ModelConfig, build_ahiq
    from tests.conftest import TINY

    # another ViT and ResNet, other blocks, and timm keyword arguments: all come back from the metadata
    config = ModelConfig(**{**TINY.to_dict(), "vit": "vit_tiny_patch16_224.augreg_in21k_ft_in1k", "vit_blocks": (1, 2),
                            "cnn": "resnet18.a1_in1k", "cnn_kwargs": {"channels": [8, 16, 32, 64]}})
    model = build_ahiq(config, pretrained_backbones=False)
    path = tmp_path / "tiny.pth"
    save_checkpoint(path, model)
    loaded = load_model(path, pretrained_backbones=False, device="cpu")
    assert loaded.config == config and not loaded.training
    assert loaded.cnn.out_channels == 2 * 8 and loaded.vit.out_channels == 2 * 32  # resnet18: 2 basic blocks
    _equal(loaded.regressor.state_dict(), model.regressor.state_dict())
    meta = checkpoint_dict(loaded)["ahiq"]["model_config"]
    assert meta["vit_blocks"] == [1, 2] and meta["cnn_kwargs"] == {"channels": (8, 16, 32, 64)}
    # a config read back from JSON (opt.json) is the same config
    import json

    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    # keyword arguments given to load_model override the stored architecture
    wider = load_model(None, pretrained_backbones=False, config=config, head_kwargs={"channels": 8})
    assert wider.regressor.down_channel.weight.shape[0] == 8 and wider.config.cnn == "resnet18.a1_in1k"


@pytest.mark.parametrize("field, value, message", [
    ("vit_kwargs", ["depth", 2], "give timm keyword arguments as a dict"),
    ("vit_kwargs", {"dynamic_img_size": False}, "set by AHIQ itself"),
    ("head_kwargs", {"width": 3}, "positive integer widths for channels, hidden, smoothed"),
    ("fusion_kwargs", {"hidden": 0}, "positive integer widths for hidden"),
])
def test_bad_architecture_arguments_are_user_errors(field, value, message):
    from ahiq.models.ahiq import ModelConfig

    with pytest.raises(UserError, match=message) as err:
        ModelConfig(**{field: value})
    assert str(err.value).startswith(f"{field}=") and err.value.for_cli().startswith(f"--{field} ")


def test_newer_format_version_is_refused_with_one_line(small_model, tmp_path):
    path = tmp_path / "future.pth"
    ckpt = checkpoint_dict(small_model)
    ckpt["ahiq"]["format_version"] = 99
    torch.save(ckpt, path)
    with pytest.raises(UserError, match="checkpoint format 99, newer than this code reads") as err:
        read_checkpoint(path)
    assert "\n" not in str(err.value)
