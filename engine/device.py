"""Where and how the network runs: device, precision, torchrun set-up (one rank's failure stops all), seeding."""
from __future__ import annotations

import atexit
import contextlib
import datetime
import functools
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
import torch.distributed as dist

from ahiq.engine.config import RunConfig  # noqa: F401  (re-exported)
from ahiq.utils.device import resolve_device  # noqa: F401  (re-exported)
from ahiq.utils.errors import Stopped, UserError, arg, note

PRECISIONS = ("fp32", "bf16")


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware (CUDA, or a CPU with AVX512-BF16 or AMX)."""
    where = resolve_device(device) if device == "auto" else torch.device(device)  # no GPU for "cuda": False
    if where.type == "cuda":
        return torch.cuda.is_available()
    if where.type != "cpu":
        return False
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(bool(check()) for check in checks if check is not None)


def describe_precision(precision: str, device: str | torch.device) -> str:
    if precision == "bf16" and not native_bf16(device):
        return "bf16 (emulated: this CPU has no AVX512-BF16/AMX, so fp32 is faster here)"
    return precision


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device, strict: bool = True) -> Iterator[None]:
    """Autocast for ``bf16``; fp32 otherwise, with ``strict`` without TF32 on GPUs (inside the block only)."""
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
    """Where this process runs: rank, world size, device, and the store the ranks share (None alone)."""

    rank: int
    world_size: int
    device: torch.device
    store: Any = None
    rounds: ClassVar[dict] = {}  # how often each tag was waited for in this process (each wait needs a fresh key)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def fail(self, message: str) -> None:
        if self.store is not None:
            self.store.set("abort", f"rank {self.rank}: {message}")

    def check(self) -> None:
        """:class:`Stopped` when another rank has failed."""
        if self.store is not None and self.store.check(["abort"]):
            raise Stopped(self.store.get("abort").decode())

    def wait_all(self, tag: str) -> None:
        """Wait until every rank has reached ``tag``, polling the store (a rank that failed meanwhile stops the others)."""
        if self.store is None:
            return
        self.rounds[tag] = self.rounds.get(tag, 0) + 1
        key = f"{tag}/{self.rounds[tag]}"
        self.store.add(key, 1)
        while int(self.store.add(key, 0)) < self.world_size:
            self.check()
            time.sleep(0.05)

    def main_first(self, work: Callable[[], Any], tag: str) -> None:
        """``work`` on rank 0 alone (files the others then read), every rank waiting at ``tag`` until it is done."""
        if self.main:
            work()
        self.wait_all(tag)

    def gather(self, value: Any) -> list:
        """``value`` of every rank, in rank order (alone: ``[value]``)."""
        if self.world_size == 1:
            return [value]
        out: list = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out


def setup_run(device: str) -> RunContext:
    """The run's context; under torchrun torch.distributed initialised (NCCL on GPU, gloo on CPU) with a store client."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    where = resolve_device(device)
    if where.type == "cuda" and world > 1:
        where = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(where)
    store = None
    if world > 1:
        if not dist.is_initialized():  # once per process; closed when it exits (scripts may run one after another)
            dist.init_process_group("nccl" if where.type == "cuda" else "gloo")
            atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
        client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                               timeout=datetime.timedelta(seconds=60), wait_for_workers=False)
        store = dist.PrefixStore(f"ahiq/{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}/", client)
    return RunContext(rank, world, where, store)


@functools.cache
def usable_workers(asked: int) -> int:
    """``asked`` DataLoader workers, at most one per CPU this process may use (a note says so)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if asked > cores:
        note(f"note: {arg('num_workers')}{asked} > the {cores} CPU cores here; using {cores}")
    return min(asked, cores)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
