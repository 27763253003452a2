"""The running floor's set-up: scoped precision flags, and messages that speak Python or flags."""
from __future__ import annotations

import pytest
import torch

from ahiq.engine.device import describe_precision, native_bf16, precision_context, resolve_device
from ahiq.utils.errors import UserError, arg, cli_main, flag


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
