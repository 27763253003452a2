"""Where and how the network runs: device choice, numeric precision, torchrun set-up, seeding."""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist

from utils.errors import UserError, arg

PRECISIONS = ("fp32", "bf16")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available else CPU; a CUDA device without a GPU is a :class:`UserError`."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{arg('device')}{device}: no CUDA GPU is visible; use {arg('device')}cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"{arg('device')}{device}: not a device; use auto, cpu, cuda or cuda:N") from None


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware: a CUDA GPU, or a CPU with AVX512-BF16 or AMX (as PyTorch's
    CPU feature check reports them). Elsewhere bf16 is emulated and slower than fp32. A property of the machine,
    never of its load."""
    where = resolve_device(device) if device == "auto" else torch.device(device)  # no GPU for "cuda": False
    if where.type == "cuda":
        return torch.cuda.is_available()
    if where.type != "cpu":
        return False
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(bool(check()) for check in checks if check is not None)


def describe_precision(precision: str, device: str | torch.device) -> str:
    """``precision`` as the run header prints it: bf16 on a CPU without bf16 hardware says that it is emulated."""
    if precision == "bf16" and not native_bf16(device):
        return "bf16 (emulated: this CPU has no AVX512-BF16/AMX, so fp32 is faster here)"
    return precision


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device, strict: bool = True) -> Iterator[None]:
    """Autocast for ``bf16``; fp32 otherwise. With ``strict`` fp32 means fp32 on GPUs too (TF32 off inside
    the block only: the previous flags are restored on exit); without it PyTorch's own TF32 defaults apply."""
    if precision not in PRECISIONS:
        raise UserError(f"{arg('precision')}{precision}: use fp32 or bf16")
    if precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
        return
    if not (strict and device.type == "cuda"):
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@dataclass
class RunContext:
    """Where this process runs: rank and world size (1 without torchrun) and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_run(device: str) -> RunContext:
    """Initialise torch.distributed when started by torchrun (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    where = resolve_device(device)
    if where.type == "cuda" and world > 1:
        where = torch.device("cuda", local)
        torch.cuda.set_device(where)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if where.type == "cuda" else "gloo")
    return RunContext(rank, world, local, where)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
