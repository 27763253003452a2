"""What the benchmarks share: timing and peak memory, seeded weights and images, tables."""
from __future__ import annotations

import argparse
import csv
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from ahiq.data.images import read_image
from ahiq.engine.device import native_bf16
from ahiq.models.ahiq import AHIQ, ModelConfig, build_ahiq
from ahiq.utils.io import shared_folder
from ahiq.utils.tables import markdown_table

ROOT = Path(__file__).resolve().parents[1]
KADID = shared_folder() / "data" / "mini" / "KADID-10k-mini"


def parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's command line, described by its docstring's first paragraph."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0])


def machine(device: str | torch.device = "cpu") -> str:
    """The GPU's name, or the CPU's model and threads; whether it computes bf16 in hardware; torch's version."""
    if torch.device(device).type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        model = re.search(r"^model name\s*:\s*(.+)$", info, re.MULTILINE)
        name = f"{model.group(1) if model else 'unknown CPU'} ({torch.get_num_threads()} threads)"
    return f"{name}; bf16 in hardware: {'yes' if native_bf16(device) else 'no'}; torch {torch.__version__}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rss_kib(field: str) -> int:
    found = re.search(rf"^{field}:\s*(\d+) kB$", Path("/proc/self/status").read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no {field} in /proc/self/status")
    return int(found[1])


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


def random_model(config: ModelConfig | None = None, seed: int | None = None, gain: float = 1.0, bias: float = 0.01) -> AHIQ:
    """A model in eval mode with seeded random backbones, and fusion and head weights ``N(0, gain / fan_in)`` whose
    scores spread (PyTorch's init: near-constant)."""
    torch.manual_seed(0)
    model = build_ahiq(config, pretrained_backbones=False, seed=seed)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for prm in [*model.deform_net.parameters(), *model.regressor.parameters()]:
            scale = (gain / prm[0].numel()) ** 0.5 if prm.dim() > 1 else bias
            prm.copy_(torch.randn(prm.shape, generator=gen) * scale)
    return model.eval()


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A blurred random picture ``(H, W, 3)`` uint8, smooth like a photograph."""
    blurred = cv2.GaussianBlur(rng.random((height, width, 3)).astype(np.float32), (0, 0), 3)
    return np.clip(blurred * 510 - 128, 0, 255).astype(np.uint8)


def noisy(image: np.ndarray, rng: np.random.Generator, std: float) -> np.ndarray:
    """``image`` uint8 with Gaussian noise of ``std`` grey levels."""
    return np.clip(image + rng.normal(0, std, image.shape), 0, 255).astype(np.uint8)


def one_reference_set(folder: Path, distorted: int) -> tuple[Path, str]:
    """``folder/images``: reference I01.png and ``distorted`` versions (the real KADID-10k ones first), and a line
    saying which are generated."""
    mini, out = KADID / "images", folder / "images"
    out.mkdir()
    real = (mini / "I01.png").is_file()
    if real:
        for real in [mini / "I01.png", *sorted(mini.glob("I01_*.png"))[:distorted]]:
            shutil.copy(real, out / real.name)
    else:
        cv2.imwrite(str(out / "I01.png"), smooth_image(np.random.default_rng(0), 384, 512))
    reference = cv2.imread(str(out / "I01.png"))
    rng = np.random.default_rng(1)
    made = distorted - len(list(out.glob("I01_*.png")))
    for k in range(made):  # JPEG at falling quality, then noise, in turn
        quality = [cv2.IMWRITE_JPEG_QUALITY, 40 - 10 * (k // 2)]
        image = noisy(reference, rng, 5 + 5 * k) if k % 2 else cv2.imdecode(cv2.imencode(".jpg", reference, quality)[1], 1)
        cv2.imwrite(str(out / f"I01_9{k}_01.png"), image)
    return out, f"I01 {'from KADID-10k' if real else f'generated (no {KADID})'}; {made} distorted generated"


def image_tensor(path, device="cpu") -> torch.Tensor:
    """An image file as ``read_image`` decodes it, ``(1, 3, H, W)``."""
    return torch.from_numpy(read_image(path)).permute(2, 0, 1)[None].to(device)


# score.py in a child that reports its own peak resident set when it ends.
PEAK = ("import resource, runpy, sys\nsys.argv = ['score.py', *sys.argv[1:]]\ntry:\n    runpy.run_path('score.py', "
        "run_name='__main__')\nfinally:\n    print('peak_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
        "file=sys.stderr)")


def score_py(out: Path, *options: str, ranks: int = 1, threads: int | None = None) -> dict:
    """``python score.py *options --output out`` as a child (``ranks`` > 1: by torchrun), ``OMP_NUM_THREADS=threads``:
    ``{"scores": {distorted file name: score}, "pairs_per_s": by its own timing, "peak_mib", "wall", "cpu": seconds}``."""
    launch = [sys.executable, "-c", PEAK] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run",
                                                              "--standalone", "--nproc_per_node", str(ranks), "score.py"]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([*launch, *options, "--output", str(out)], cwd=ROOT, capture_output=True, text=True, env=env)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(proc.stderr[-2000:])
    pairs, seconds = re.search(r"scored (\d+) pair\(s\) with crops=\S+ in ([\d.]+)s", proc.stderr).groups()
    peak = re.search(r"peak_kib (\d+)", proc.stderr)
    with out.open(newline="") as f:
        scores = {Path(r["dist"]).name: float(r["score"]) for r in csv.DictReader(f)}
    return {"scores": scores, "wall": wall,
            "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
            "pairs_per_s": int(pairs) / float(seconds), "peak_mib": int(peak.group(1)) / 1024 if peak else float("nan")}


def print_table(header: list[str], rows: list[list], title: str = "") -> None:
    print("\n" + markdown_table(header, rows, title), flush=True)
