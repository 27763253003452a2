"""Peak memory and time of one AHIQLoss step (forward + backward to the image), with and without checkpointing.

    python benchmarks/loss_memory.py                    # default network, B=4, 224x224 images (one crop each)
    python benchmarks/loss_memory.py --device cuda --batch 16

Each setting in its own process: seconds per step, the ratio, the peak memory a step adds, the gradients' difference."""
from __future__ import annotations

import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, parser, peak_mib, print_table, reset_peak, sync  # noqa: E402
from ahiq.engine.device import resolve_device  # noqa: E402
from ahiq.engine.loss import AHIQLoss  # noqa: E402


def step(loss_fn: AHIQLoss, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    image = dist.clone().requires_grad_(True)
    loss_fn(image, ref).backward()
    return image.grad


def measure(args, checkpointing: bool) -> dict:
    device = resolve_device(args.device)
    torch.manual_seed(0)
    loss_fn = AHIQLoss("none", pretrained_backbones=False, crop_size=args.size, device=device, precision=args.precision,
                       checkpointing=checkpointing)
    gen = torch.Generator().manual_seed(1)
    ref = torch.rand(args.batch, 3, args.size, args.size, generator=gen).to(device)
    dist = (ref + 0.1 * torch.randn(ref.shape, generator=gen).to(device)).clamp(0, 1)
    base = reset_peak(device)
    grad = step(loss_fn, dist, ref)  # warm-up; its peak counts (a first step costs what later ones do)
    times = []
    for _ in range(args.repeats):
        sync(device)
        start = time.perf_counter()
        step(loss_fn, dist, ref)
        sync(device)
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "mib": peak_mib(device) - base, "device": str(device),
            "grad": grad.flatten()[::997].tolist(), "grad_max": grad.abs().max().item()}


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--batch", type=int, default=4, help="image pairs per step")
    p.add_argument("--size", type=int, default=224, help="image (and crop) size")
    p.add_argument("--repeats", type=int, default=2, help="timed steps per setting (after one warm-up step)")
    p.add_argument("--precision", default="fp32", help="fp32 or bf16")
    args = p.parse_args(argv)
    # Each setting in a fresh process, so no other setting's memory hides its peak.
    # A worker that dies (the OOM killer) is a BrokenProcessPool error, not a hang.
    rows = {}
    for setting in ("off", "on"):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows[setting] = pool.submit(measure, args, setting == "on").result()
    off, on = rows["off"], rows["on"]
    print(f"AHIQLoss step (forward + backward to the image), B={args.batch}, {args.size}x{args.size}, "
          f"{args.precision}, {off['device']}: {machine(off['device'])}")
    print_table(["checkpointing", "s/step", "vs off", "peak memory of a step (MiB)"],
                [[setting, f"{r['seconds']:.2f}", f"{r['seconds'] / off['seconds']:.2f}x", f"{r['mib']:.0f}"]
                 for setting, r in rows.items()])
    diff = max(abs(a - b) for a, b in zip(off["grad"], on["grad"])) / off["grad_max"]
    print(f"gradient difference on/off (sampled entries, relative to the largest): {diff:.1e}")


if __name__ == "__main__":
    main()
