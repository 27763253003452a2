"""score.py as a whole process against the authors' computation pattern in-process, on real image pairs.

    python benchmarks/score_process.py --ref REF_DIR --dist DIST_DIR [--crops five] [--device cpu] [--precision fp32]

(a) the authors' pattern (``benchmarks/authors_pattern.py``) in this process, models already built, one crop
at a time; (b) ``python score.py`` as a subprocess: start-up, model building and scoring all counted. Both
use the same seeded random weights (written to a temporary folder), so their scores must agree.
Without --ref/--dist the real KADID-10k subset in ../shared/data/mini is used when present.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.authors_pattern import AuthorsPattern  # noqa: E402
from data.crops import crop_positions  # noqa: E402
from data.images import pair_paths, read_image  # noqa: E402
from models.ahiq import build_ahiq  # noqa: E402


def main(argv=None) -> None:
    mini = ROOT.parent / "shared" / "data" / "mini" / "KADID-10k-mini" / "images"
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", default=str(mini))
    p.add_argument("--dist", default=str(mini))
    p.add_argument("--crops", default="five")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--batch_size", type=int, default=1)
    args = p.parse_args(argv)
    pairs, problems = pair_paths(args.ref, args.dist)
    if problems or not pairs:
        sys.exit(f"no usable pairs in {args.ref} / {args.dist}: {problems[:3]}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        vit, cnn = timm.create_model("vit_base_patch8_224"), timm.create_model("resnet50")
        torch.save(vit.state_dict(), tmp / "vit.pth")
        torch.save(cnn.state_dict(), tmp / "cnn.pth")
        model = build_ahiq(vit_weights=str(tmp / "vit.pth"), cnn_weights=str(tmp / "cnn.pth")).eval()
        torch.save({"regressor_model_state_dict": model.regressor.state_dict(),
                    "deform_net_model_state_dict": model.deform_net.state_dict()}, tmp / "ahiq.pth")
        reference = AuthorsPattern(model)

        start = time.perf_counter()
        expected = {}
        for dist_path, ref_path in pairs:
            dist = torch.from_numpy(read_image(dist_path)).permute(2, 0, 1)[None].float() / 255
            ref = torch.from_numpy(read_image(ref_path)).permute(2, 0, 1)[None].float() / 255
            positions = crop_positions(args.crops, dist.shape[-2], dist.shape[-1], 224)
            expected[dist_path.name] = reference.score_image(dist, ref, positions, 224).item()
        t_authors = time.perf_counter() - start

        out = tmp / "scores.csv"
        cmd = [sys.executable, "score.py", "--ref", args.ref, "--dist", args.dist, "--checkpoint", str(tmp / "ahiq.pth"),
               "--vit_weights", str(tmp / "vit.pth"), "--cnn_weights", str(tmp / "cnn.pth"), "--crops", args.crops,
               "--device", args.device, "--precision", args.precision, "--batch_size", str(args.batch_size),
               "--output", str(out), "--quiet"]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        t_ours = time.perf_counter() - start
        ours = {Path(r["dist"]).name: float(r["score"]) for r in csv.DictReader(out.open())}
    diff = max(abs(ours[k] - v) for k, v in expected.items())
    print(f"{len(pairs)} pairs, crops={args.crops}, device={args.device}, threads={torch.get_num_threads()}")
    print(f"authors' pattern in-process: {t_authors:.1f} s")
    print(f"score.py whole process ({args.precision}): {t_ours:.1f} s  -> {t_authors / t_ours:.2f}x; "
          f"max |score difference| {diff:.2e}")


if __name__ == "__main__":
    main()
