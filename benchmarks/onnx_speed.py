"""ONNX export of the full-size network, checked and timed on the CPU beside ours, in one run.

    python benchmarks/onnx_speed.py                       # random weights (seeded), one 512x384 pair, five crops
    python benchmarks/onnx_speed.py --checkpoint FILE     # a trained model and the backbones it records

onnxruntime's scores against PyTorch fp32 on five crops of KADID-10k pairs (PASS within 1e-4), then the speed ratio.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import KADID, noisy, parser, print_table, spread_heads, timed  # noqa: E402
from ahiq.data.crops import crop_positions  # noqa: E402
from ahiq.data.images import as_unit_float, read_image  # noqa: E402
from ahiq.models.ahiq import build_ahiq  # noqa: E402
from ahiq.models.checkpoint import load_model  # noqa: E402
from ahiq.models.config import SEED  # noqa: E402
from ahiq.models.export import export_onnx  # noqa: E402


def cpu_line() -> str:
    """The CPU's model name and whether it computes bf16 in hardware (AVX512-BF16, AMX)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in info.splitlines() if ":" in line)}
    flags = fields.get("flags", "").split()
    yes = lambda flag: "yes" if flag in flags else "no"  # noqa: E731
    return f"{fields.get('model name', 'unknown CPU')}; avx512_bf16 {yes('avx512_bf16')}, amx {yes('amx_tile')}"


def crop_pairs(pairs: int, crop: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``(dist, ref)`` five crops of each pair, ``(N, 3, crop, crop)`` in [0, 1], and where they came from."""
    images = KADID / "images"
    if images.is_dir():
        dists = sorted(images.glob("I01_*.png"))[:pairs]
        loaded = [(read_image(d), read_image(images / "I01.png")) for d in dists]
        what = f"KADID-10k I01 vs {', '.join(d.name for d in dists)}"
    else:
        rng = np.random.default_rng(0)
        ref = (rng.random((384, 512, 3)) * 255).astype(np.uint8)
        loaded = [(noisy(ref, rng, 10 * (k + 1)), ref) for k in range(pairs)]
        what = f"{pairs} generated 512x384 noise pair(s) (no shared folder at {images})"
    out: tuple[list, list] = ([], [])
    for dist, ref in loaded:
        for top, left in crop_positions("five", *ref.shape[:2], crop, seed=SEED):
            for side, image in zip(out, (dist, ref)):
                side.append(as_unit_float(image)[top:top + crop, left:left + crop].transpose(2, 0, 1))
    return np.stack(out[0]), np.stack(out[1]), what


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--checkpoint", default=None, help="AHIQ checkpoint (default: seeded random weights)")
    p.add_argument("--pairs", type=int, default=1, help="image pairs (five 224 crops each)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both PyTorch and onnxruntime")
    p.add_argument("--repeats", type=int, default=1, help="timed runs of each")
    p.add_argument("--keep", default=None, help="write the ONNX file here (default: a temporary folder)")
    args = p.parse_args(argv)
    import onnxruntime

    torch.set_num_threads(args.threads)
    if args.checkpoint:
        model = load_model(args.checkpoint, device="cpu")
    else:
        model = build_ahiq(pretrained_backbones=False, seed=0).eval()
        spread_heads(model, gain=3.0, bias=0.1)
    dist, ref, what = crop_pairs(args.pairs, 224)
    print(f"cpu: {cpu_line()}; {args.threads} threads; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
    print(f"crops: {what}; {len(dist)} crop pairs of 224x224")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or str(Path(tmp) / "ahiq.onnx")
        start = time.perf_counter()
        export_onnx(model, path, 224)
        print(f"export: {time.perf_counter() - start:.1f} s, {Path(path).stat().st_size / 2**20:.0f} MiB")
        settings = onnxruntime.SessionOptions()
        settings.intra_op_num_threads = args.threads
        session = onnxruntime.InferenceSession(path, settings, providers=["CPUExecutionProvider"])

        @torch.inference_mode()
        def ours(n=None):
            return model(torch.from_numpy(dist[:n]), torch.from_numpy(ref[:n])).numpy()

        def theirs(n=None):
            return session.run(None, {"dist": dist[:n], "ref": ref[:n]})[0]

        cpu = torch.device("cpu")  # warm-up on one crop pair
        s_ours, t_ours, _ = timed(ours, cpu, args.repeats, warm_up=lambda: ours(1))
        s_theirs, t_theirs, _ = timed(theirs, cpu, args.repeats, warm_up=lambda: theirs(1))
    diff = float(np.abs(s_ours - s_theirs).max())
    print(f"check: max |onnxruntime - PyTorch| = {diff:.1e} over {len(dist)} crop pairs (scores "
          f"{s_ours.min():.4f}..{s_ours.max():.4f}): {'PASS' if diff < 1e-4 else 'FAIL'} (tolerance 1e-4)")
    print_table(["path", "crop pairs/s", "s per image pair (5 crops)", "vs PyTorch"],
                [[name, f"{len(dist) / t:.2f}", f"{t / args.pairs:.1f}", f"{t_ours / t:.2f}x"]
                 for name, t in (("PyTorch fp32 (ours, sampled deformable conv)", t_ours),
                                 ("onnxruntime fp32 (DeformConv)", t_theirs))])


if __name__ == "__main__":
    main()
