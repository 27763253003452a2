"""What the benchmarks share: timing and peak memory, seeded weights and images, tables."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from ahiq.data.images import read_image
from ahiq.utils.io import shared_folder
from ahiq.utils.tables import markdown_table

ROOT = Path(__file__).resolve().parents[1]
KADID = shared_folder() / "data" / "mini" / "KADID-10k-mini"


def parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's command line, described by its docstring's first paragraph."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak(device: torch.device) -> float:
    """Start a new peak of memory (CUDA allocations, or the CPU resident set); the memory in use now (MiB)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    return _rss_kib("VmRSS") / 1024


def peak_mib(device: torch.device) -> float:
    """The peak since :func:`reset_peak` (MiB)."""
    return torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _rss_kib("VmHWM") / 1024


def timed(fn, device: torch.device, repeats: int = 1, warm_up=None) -> tuple[object, float, float]:
    """``fn()`` ``repeats`` times after a ``warm_up`` call: the last output, seconds per call, peak CUDA GiB."""
    (warm_up or fn)()
    if device.type == "cuda":
        reset_peak(device)
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    sync(device)
    gib = peak_mib(device) / 1024 if device.type == "cuda" else float("nan")
    return out, (time.perf_counter() - start) / repeats, gib


def spread_heads(model: torch.nn.Module, gain: float = 1.0, bias: float = 0.01, seed: int = 1) -> None:
    """Seeded random fusion and head weights ``N(0, gain / fan_in)`` whose scores spread (PyTorch's init: near-constant)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prm in [*model.deform_net.parameters(), *model.regressor.parameters()]:
            scale = (gain / prm[0].numel()) ** 0.5 if prm.dim() > 1 else bias
            prm.copy_(torch.randn(prm.shape, generator=gen) * scale)


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A blurred random picture ``(H, W, 3)`` uint8, smooth like a photograph."""
    blurred = cv2.GaussianBlur(rng.random((height, width, 3)).astype(np.float32), (0, 0), 3)
    return np.clip(blurred * 510 - 128, 0, 255).astype(np.uint8)


def noisy(image: np.ndarray, rng: np.random.Generator, std: float) -> np.ndarray:
    """``image`` uint8 with Gaussian noise of ``std`` grey levels."""
    return np.clip(image + rng.normal(0, std, image.shape), 0, 255).astype(np.uint8)


def image_tensor(path, device="cpu") -> torch.Tensor:
    """An image file as ``read_image`` decodes it, ``(1, 3, H, W)``."""
    return torch.from_numpy(read_image(path)).permute(2, 0, 1)[None].to(device)


def print_table(header: list[str], rows: list[list], title: str = "") -> None:
    print("\n" + markdown_table(header, rows, title), flush=True)
