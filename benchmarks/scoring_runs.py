"""score.py runs: the same pairs by 1 and 2 processes (torchrun, gloo, one thread each) and one GPU if present; the
peak memory of a scoring process as pairs, crops and the image size grow; score.py against the authors' pattern.

    python benchmarks/scoring_runs.py --case scaling    # 64 pairs (8 references x 8), pairs/s, ratio, score diff
    python benchmarks/scoring_runs.py --case memory     # peak RSS: 1x1 vs 1x4 at random:20, 1k vs 10k pairs, 2048^2
    python benchmarks/scoring_runs.py --case process [--ref REF_DIR --dist DIST_DIR] [--crops five] [--precision fp32]

Every run is ``python score.py`` as a subprocess with seeded random weights. scaling, memory: rates by score.py's own
timing; process: wall and CPU seconds, start-up included, against the authors' pattern in-process with the same
weights, on KADID-10k I01 from ../shared/data/mini (topped up with JPEG and noise) or ``--ref``/``--dist``."""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.authors_pattern import AuthorsPattern  # noqa: E402
from benchmarks.common import (image_tensor, machine, noisy, one_reference_set, parser, print_table,  # noqa: E402
                               random_model, score_py, smooth_image)
from ahiq.data.crops import crop_positions  # noqa: E402
from ahiq.data.images import pair_paths, read_image  # noqa: E402
from ahiq.models.ahiq import build_ahiq  # noqa: E402
from ahiq.models.checkpoint import save_checkpoint  # noqa: E402
from ahiq.models.config import SEED, ModelConfig  # noqa: E402

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


def score(folder: Path, ckpt: Path, out: Path, *extra: str, ranks: int = 1, device: str = "cpu") -> dict:
    """One score.py run on ``folder``'s pairs, one thread a process."""
    return score_py(out, "--ref", str(folder / "ref"), "--dist", str(folder / "dist"), "--checkpoint", str(ckpt),
                    "--device", device, "--quiet", *extra, ranks=ranks, threads=1)


def scaling(tmp: Path, args) -> None:
    pairs, ckpt = write_pairs(tmp / "pairs", 8, 8, args.size, args.size), tmp / "ckpt.pth"
    save_checkpoint(ckpt, random_model(seed=3))
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
    full, tiny = tmp / "full.pth", tmp / "tiny.pth"
    save_checkpoint(full, random_model(seed=3))
    for n in (1, 4):  # all crops of a pair in one batch would grow with n; a batch counts crops
        run = score(write_pairs(tmp / f"kadid{n}", 1, n, 384, 512), full, tmp / f"k{n}.csv", "--crops", "random:20",
                    "--batch_size", "16")
        rows.append((f"1 x {n} of 512x384, random:20, batch 16, default network", run))
    save_checkpoint(tiny, random_model(ModelConfig(**TINY), seed=3))
    for refs in (10, 100):  # 1,000 and 10,000 pairs of 32x32; score.py builds the network the checkpoint records
        run = score(write_pairs(tmp / f"many{refs}", refs, 100, 32, 32), tiny, tmp / f"m{refs}.csv", "--crop_size",
                    "32", "--batch_size", "64")
        rows.append((f"{refs * 100:,} pairs of 32x32, centre crop, tiny network", run))
    run = score(write_pairs(tmp / "big", 1, 1, 2048, 2048), full, tmp / "big.csv", "--crops", "five", "--batch_size", "16")
    rows.append(("1 x 1 of 2048x2048, five crops, default network", run))
    print_table(["case", "peak RSS MiB", "pairs/s"],
                [[name, f"{run['peak_mib']:.0f}", f"{run['pairs_per_s']:.2f}"] for name, run in rows])


def process(tmp: Path, args) -> None:
    """The authors' pattern in-process (models built) against ``python score.py`` per precision, start-up included."""
    if not args.ref:
        args.ref = args.dist = str(one_reference_set(tmp, args.distorted)[0])
    pairs, problems = pair_paths(args.ref, args.dist)
    if problems or not pairs:
        sys.exit(f"no usable pairs in {args.ref} / {args.dist}: {problems[:3]}")
    torch.manual_seed(0)  # seeded random weights written for score.py; the authors' pattern over them
    torch.save(timm.create_model("vit_base_patch8_224").state_dict(), tmp / "vit.pth")
    torch.save(timm.create_model("resnet50").state_dict(), tmp / "cnn.pth")
    model = build_ahiq(vit_weights=str(tmp / "vit.pth"), cnn_weights=str(tmp / "cnn.pth")).eval()
    torch.save({"regressor_model_state_dict": model.regressor.state_dict(),
                "deform_net_model_state_dict": model.deform_net.state_dict()}, tmp / "ahiq.pth")
    reference = AuthorsPattern(model)
    sizes = {tuple(read_image(d).shape[:2]) for d, _ in pairs}
    print(f"{len(pairs)} pairs of {len({r for _, r in pairs})} reference(s), sizes {sorted(sizes)}, crops={args.crops}"
          f", batch_size={args.batch_size}, device={args.device}", flush=True)
    start, cpu_start = time.perf_counter(), time.process_time()
    expected = {}
    for dist_path, ref_path in pairs:
        dist, ref = image_tensor(dist_path).float() / 255, image_tensor(ref_path).float() / 255
        positions = crop_positions(args.crops, dist.shape[-2], dist.shape[-1], 224, seed=SEED)
        expected[dist_path.name] = reference.score_image(dist, ref, positions, 224).item()
    t_authors, cpu_authors = time.perf_counter() - start, time.process_time() - cpu_start
    print(f"authors' pattern in-process: {t_authors:.1f} s wall, {cpu_authors:.1f} s CPU", flush=True)
    for precision in args.precision.split(","):
        run = score_py(tmp / f"scores_{precision}.csv", "--ref", args.ref, "--dist", args.dist, "--crops", args.crops,
                       "--checkpoint", str(tmp / "ahiq.pth"), "--vit_weights", str(tmp / "vit.pth"), "--cnn_weights",
                       str(tmp / "cnn.pth"), "--device", args.device, "--precision", precision, "--batch_size",
                       str(args.batch_size), "--quiet")
        diff = max(abs(run["scores"][k] - v) for k, v in expected.items())
        wall, cpu = run["wall"], run["cpu"]
        print(f"score.py whole process ({precision}): {wall:.1f} s wall -> {t_authors / wall:.2f}x, {cpu:.1f} s CPU "
              f"-> {cpu_authors / cpu:.2f}x; max |score difference| {diff:.2e}", flush=True)


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--case", choices=["scaling", "memory", "process"], default="scaling")
    p.add_argument("--size", type=int, default=64, help="scaling: image side (and crop), a multiple of 32")
    p.add_argument("--ref", default=None, help="process: reference file or folder (default: one reference, see above)")
    p.add_argument("--dist", default=None, help="process: distorted file or folder")
    p.add_argument("--distorted", type=int, default=8, help="process: distorted images of the default reference")
    p.add_argument("--crops", default="five", help="process: crop protocol")
    p.add_argument("--device", default="cpu", help="process: score.py's device")
    p.add_argument("--precision", default="fp32,bf16", help="process: comma list; one score.py run each")
    p.add_argument("--batch_size", type=int, default=4, help="process: score.py's batch size")
    args = p.parse_args(argv)
    threads = "" if args.case == "process" else "; children run with OMP_NUM_THREADS=1"
    print(f"{machine(args.device)}{threads}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        {"scaling": scaling, "memory": memory, "process": process}[args.case](Path(tmp), args)


if __name__ == "__main__":
    main()
