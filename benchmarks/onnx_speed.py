"""ONNX export of the full-size network, checked and timed on the CPU beside ours, in one run.

    python benchmarks/onnx_speed.py                       # random weights (seeded), one 512x384 pair, five crops
    python benchmarks/onnx_speed.py --checkpoint FILE     # a trained model and the backbones it records

onnxruntime's scores against PyTorch fp32 on five crops of KADID-10k pairs (PASS within 1e-4), then the speed ratio."""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, one_reference_set, parser, print_table, random_model, timed  # noqa: E402
from examples.score_onnx import crops, open_model, read_rgb  # noqa: E402
from ahiq.data.crops import crop_positions  # noqa: E402
from ahiq.models.checkpoint import load_model  # noqa: E402
from ahiq.models.config import SEED  # noqa: E402
from ahiq.models.export import export_onnx  # noqa: E402


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
    model = load_model(args.checkpoint, device="cpu") if args.checkpoint else random_model(seed=0, gain=3.0, bias=0.1)
    print(f"cpu: {machine()}; onnxruntime {onnxruntime.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        images, source = one_reference_set(Path(tmp), args.pairs)  # five 224 crops of each pair, (N, 3, 224, 224) in [0, 1]
        ref = read_rgb(images / "I01.png")
        positions = crop_positions("five", *ref.shape[:2], 224, seed=SEED)
        dists = sorted(images.glob("I01_*.png"))
        dist = np.concatenate([crops(read_rgb(d), positions, 224) for d in dists])
        ref = np.tile(crops(ref, positions, 224), (len(dists), 1, 1, 1))
        print(f"crops: I01 vs {', '.join(d.name for d in dists)} ({source}); {len(dist)} crop pairs of 224x224")
        path = args.keep or str(Path(tmp) / "ahiq.onnx")
        start = time.perf_counter()
        export_onnx(model, path, 224)
        print(f"export: {time.perf_counter() - start:.1f} s, {Path(path).stat().st_size / 2**20:.0f} MiB")
        session, _ = open_model(path, args.threads)

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
