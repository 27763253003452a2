"""score.py at scale: the same pairs by 1 and 2 processes (torchrun, gloo, one thread each) and one GPU if present;
the peak memory of a scoring process as pairs, crops and the image size grow.

    python benchmarks/scoring_runs.py --case scaling        # 64 pairs (8 references x 8), pairs/s, ratio, score diff
    python benchmarks/scoring_runs.py --case memory         # peak RSS: 1x1 vs 1x4 at random:20, 1k vs 10k pairs, 2048^2

Every run is ``python score.py`` as a subprocess with seeded random weights; rates by score.py's own timing.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, noisy, parser, print_table, random_model, score_py, smooth_image  # noqa: E402
from ahiq.models.checkpoint import save_checkpoint  # noqa: E402
from ahiq.models.config import ModelConfig  # noqa: E402

# A small network for the many-pairs case (the default one for the others).
TINY = {"vit_blocks": (1, 3), "vit_kwargs": {"embed_dim": 32, "depth": 4, "num_heads": 2},
        "cnn_kwargs": {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "stem_width": 16},
        "head_kwargs": {"channels": 16, "hidden": 32, "smoothed": 24}, "fusion_kwargs": {"hidden": 24}}


def write_pairs(folder: Path, refs: int, per_ref: int, height: int, width: int) -> Path:
    """``refs`` references with ``per_ref`` distorted images each (noise of growing strength), PNG."""
    rng = np.random.default_rng(0)
    for sub in ("ref", "dist"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for r in range(refs):
        ref = smooth_image(rng, height, width)
        cv2.imwrite(str(folder / "ref" / f"R{r:05d}.png"), ref)
        for k in range(per_ref):
            cv2.imwrite(str(folder / "dist" / f"R{r:05d}_{k:02d}_01.png"), noisy(ref, rng, 3 + 2 * k))
    return folder


def checkpoint(path: Path, config: ModelConfig) -> Path:
    save_checkpoint(path, random_model(config, seed=3))
    return path


def score(folder: Path, ckpt: Path, out: Path, *extra: str, ranks: int = 1, device: str = "cpu") -> dict:
    """One score.py run on ``folder``'s pairs, one thread a process."""
    return score_py(out, "--ref", str(folder / "ref"), "--dist", str(folder / "dist"), "--checkpoint", str(ckpt),
                    "--device", device, "--quiet", *extra, ranks=ranks, threads=1)


def scaling(tmp: Path, args) -> None:
    pairs, ckpt = write_pairs(tmp / "pairs", 8, 8, args.size, args.size), checkpoint(tmp / "ckpt.pth", ModelConfig())
    centre = ("--crop_size", str(args.size), "--crops", "center")
    runs = {"1 process": score(pairs, ckpt, tmp / "one.csv", *centre),
            "2 processes": score(pairs, ckpt, tmp / "two.csv", *centre, ranks=2)}
    if torch.cuda.is_available():
        runs["1 GPU"] = score(pairs, ckpt, tmp / "gpu.csv", *centre, device="cuda")
    base = runs["1 process"]
    print_table([f"64 pairs ({args.size}x{args.size}, default network, centre crop)", "pairs/s", "vs 1 process",
                 "max abs score diff"],
                [[name, f"{run['pairs_per_s']:.2f}", f"{run['pairs_per_s'] / base['pairs_per_s']:.2f}x",
                  f"{max(abs(run['scores'][k] - v) for k, v in base['scores'].items()):.1e}"] for name, run in runs.items()])


def memory(tmp: Path, args) -> None:
    """Peak RSS of one score.py process per case."""
    rows = []
    full = checkpoint(tmp / "full.pth", ModelConfig())
    for n in (1, 4):  # all crops of a pair in one batch would grow with n; a batch counts crops
        run = score(write_pairs(tmp / f"kadid{n}", 1, n, 384, 512), full, tmp / f"k{n}.csv", "--crops", "random:20",
                    "--batch_size", "16")
        rows.append((f"1 x {n} of 512x384, random:20, batch 16, default network", run))
    tiny = checkpoint(tmp / "tiny.pth", ModelConfig(**TINY))
    for refs in (10, 100):  # 1,000 and 10,000 pairs of 32x32; score.py builds the network the checkpoint records
        run = score(write_pairs(tmp / f"many{refs}", refs, 100, 32, 32), tiny, tmp / f"m{refs}.csv", "--crop_size",
                    "32", "--batch_size", "64")
        rows.append((f"{refs * 100:,} pairs of 32x32, centre crop, tiny network", run))
    run = score(write_pairs(tmp / "big", 1, 1, 2048, 2048), full, tmp / "big.csv", "--crops", "five", "--batch_size",
                "16")
    rows.append(("1 x 1 of 2048x2048, five crops, default network", run))
    print_table(["case", "peak RSS MiB", "pairs/s"],
                [[name, f"{run['peak_mib']:.0f}", f"{run['pairs_per_s']:.2f}"] for name, run in rows])


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--case", choices=["scaling", "memory"], default="scaling")
    p.add_argument("--size", type=int, default=64, help="scaling: image side (and crop), a multiple of 32")
    args = p.parse_args(argv)
    print(f"CPU: {machine()}; children run with OMP_NUM_THREADS=1", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        {"scaling": scaling, "memory": memory}[args.case](Path(tmp), args)


if __name__ == "__main__":
    main()
