"""The running floor: scoped precision flags, messages that speak Python or flags, every entry point reading a
checkpoint's record the same way, and identical crop windows run once (grid:N covering rows and columns)."""
from __future__ import annotations

import pytest
import torch

from ahiq.data.crops import crop_positions, crop_windows
from ahiq.engine.device import describe_precision, native_bf16, precision_context, resolve_device
from ahiq.utils.errors import UserError, arg, cli_main, flag
from tests.conftest import random_pair_images, tiny_model


def test_strict_fp32_restores_the_tf32_flags():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        with precision_context("fp32", torch.device("cuda")):  # only flags are touched: no GPU needed
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        with precision_context("fp32", torch.device("cuda"), strict=False):  # PyTorch's own defaults apply
            assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        with pytest.raises(RuntimeError), precision_context("fp32", torch.device("cuda")):
            raise RuntimeError("flags come back even when the block fails")
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_bf16_is_autocast_and_unknown_precision_is_refused():
    with precision_context("bf16", torch.device("cpu")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(UserError, match="precision=fp16"), precision_context("fp16", torch.device("cpu")):
        pass


def test_messages_name_python_arguments_or_flags(capsys):
    err = UserError(f"{arg('crop_size')}100: must be a multiple of 32; or add {flag('skip_bad')}")
    assert str(err) == "crop_size=100: must be a multiple of 32; or add skip_bad=True"
    assert err.for_cli() == "--crop_size 100: must be a multiple of 32; or add --skip_bad"

    @cli_main
    def main():
        raise err

    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: --crop_size 100: must be a multiple of 32; or add --skip_bad\n"


def test_device_choice():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(UserError) as err:
        resolve_device("tpu9")
    assert err.value.for_cli().startswith("--device tpu9: not a device")


@pytest.mark.parametrize("avx512_bf16, amx, native", [(False, False, False), (True, False, True), (False, True, True)])
def test_native_bf16_follows_the_cpu_features(monkeypatch, avx512_bf16, amx, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert native_bf16("cpu") is native and native_bf16(torch.device("cpu")) is native
    assert describe_precision("fp32", "cpu") == "fp32"
    said = describe_precision("bf16", "cpu")
    assert (said == "bf16") is native and (said.startswith("bf16 (emulated") is not native)
    if not native:
        assert "AVX512-BF16/AMX" in said and "fp32 is faster" in said


def test_every_entry_point_reads_the_record_the_same_way(tmp_path, capsys):
    """A checkpoint of ours trained at crop 32 with random backbones: score_pairs, AHIQLoss and load_model use
    that crop size and those backbones with no arguments; train.py --checkpoint starts from them."""
    from ahiq.engine.loss import AHIQLoss
    from ahiq.engine.scoring import score_pairs
    from ahiq.models.checkpoint import load_model, save_checkpoint

    model = tiny_model(5)
    save_checkpoint(tmp_path / "ours.pth", model, {"train": {"crop_size": 32}})
    loaded = load_model(tmp_path / "ours.pth")
    assert loaded.record.crop_size == 32 and loaded.backbone_sources["vit"].kind == "random"
    random_pair_images(tmp_path, [("A0001_00_00.bmp", "A0001.bmp")], 48, 48)
    pair = (tmp_path / "dist" / "A0001_00_00.bmp", tmp_path / "ref" / "A0001.bmp")
    [result] = list(score_pairs(loaded, [pair], crops="five", progress=False))
    assert len(result.crop_scores) == 5 and result.score_map is None  # 32-pixel crops of a 48-pixel image
    loss = AHIQLoss(tmp_path / "ours.pth", crops="five")
    assert loss.crop_size == 32
    from ahiq.data.images import read_image

    image = lambda p: torch.from_numpy(read_image(p)).permute(2, 0, 1)[None].float() / 255  # noqa: E731
    assert float(loss.score(image(pair[0]), image(pair[1]))) == pytest.approx(result.score, abs=1e-5)


def test_identical_windows_run_once_and_grid_covers_rows(tmp_path, monkeypatch):
    from ahiq.engine.scoring import score_pairs

    assert crop_windows("random:20", 224, 224, 224, seed=0) == [(0, 0, 20)]  # any seed: one place to put it
    assert len({t for t, _ in crop_positions("grid:7", 384, 512, 224)}) > 1  # rows, not one row
    for n in (2, 3, 5, 7, 11, 20):
        positions = crop_positions(f"grid:{n}", 384, 512, 224)
        assert len(positions) == n
        if n >= 4:  # corners included
            assert {(0, 0), (160, 288)} <= set(positions)
    model = tiny_model(6)
    seen = []
    real = model.score_distorted
    monkeypatch.setattr(model, "score_distorted", lambda dist, side, return_maps=False: (
        seen.append(len(dist)), real(dist, side, return_maps))[1])
    random_pair_images(tmp_path, [("A0001_00_00.bmp", "A0001.bmp")], 32, 32)
    pair = (tmp_path / "dist" / "A0001_00_00.bmp", tmp_path / "ref" / "A0001.bmp")
    [many] = list(score_pairs(model, [pair], crops="random:20", crop_size=32, progress=False))
    assert seen == [1] and len(many.crop_scores) == 20  # one window through the network, counted 20 times
    [one] = list(score_pairs(model, [pair], crops="center", crop_size=32, progress=False))
    assert many.score == pytest.approx(one.score, abs=1e-7)
