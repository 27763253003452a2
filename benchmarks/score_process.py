"""score.py as a whole process against the authors' computation pattern in-process, on real image pairs.

    python benchmarks/score_process.py [--ref REF_DIR --dist DIST_DIR] [--crops five] [--precision fp32,bf16]

The authors' pattern in-process (models built) against ``python score.py`` per precision, start-up included, same
seeded weights; wall and CPU seconds. Default pairs: KADID-10k I01 from ../shared/data/mini, topped up with JPEG and noise.
"""
from __future__ import annotations

import csv
import resource
import shutil
import subprocess
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
from benchmarks.common import KADID, ROOT, image_tensor, noisy, parser, smooth_image  # noqa: E402
from ahiq.data.crops import crop_positions  # noqa: E402
from ahiq.data.images import pair_paths, read_image  # noqa: E402
from ahiq.engine.device import describe_precision  # noqa: E402
from ahiq.models.ahiq import build_ahiq  # noqa: E402
from ahiq.models.config import SEED  # noqa: E402


def one_reference_set(folder: Path, distorted: int) -> Path:
    """``folder/images``: reference I01.png and ``distorted`` versions (the real KADID-10k ones first)."""
    mini, out = KADID / "images", folder / "images"
    out.mkdir()
    if (mini / "I01.png").is_file():
        for real in [mini / "I01.png", *sorted(mini.glob("I01_*.png"))[:distorted]]:
            shutil.copy(real, out / real.name)
        reference = cv2.imread(str(out / "I01.png"))
    else:
        reference = smooth_image(np.random.default_rng(0), 384, 512)
        cv2.imwrite(str(out / "I01.png"), reference)
    rng = np.random.default_rng(1)
    for k in range(distorted - len(list(out.glob("I01_*.png")))):  # JPEG at falling quality, then noise
        if k % 2 == 0:
            image = cv2.imdecode(cv2.imencode(".jpg", reference, [cv2.IMWRITE_JPEG_QUALITY, 40 - 10 * (k // 2)])[1], 1)
        else:
            image = noisy(reference, rng, 5 + 5 * k)
        cv2.imwrite(str(out / f"I01_9{k}_01.png"), image)
    return out


def seeded_weights(tmp: Path) -> AuthorsPattern:
    """Seeded random weights written to ``tmp`` for score.py; the authors' pattern over them."""
    torch.manual_seed(0)
    torch.save(timm.create_model("vit_base_patch8_224").state_dict(), tmp / "vit.pth")
    torch.save(timm.create_model("resnet50").state_dict(), tmp / "cnn.pth")
    model = build_ahiq(vit_weights=str(tmp / "vit.pth"), cnn_weights=str(tmp / "cnn.pth")).eval()
    torch.save({"regressor_model_state_dict": model.regressor.state_dict(),
                "deform_net_model_state_dict": model.deform_net.state_dict()}, tmp / "ahiq.pth")
    return AuthorsPattern(model)


def score_py(args, tmp: Path, precision: str) -> tuple[dict[str, float], float, float]:
    """``python score.py`` on the pairs as a child: its scores by file name, wall and CPU seconds."""
    out = tmp / f"scores_{precision}.csv"
    cmd = [sys.executable, "score.py", "--ref", args.ref, "--dist", args.dist, "--checkpoint",
           str(tmp / "ahiq.pth"), "--vit_weights", str(tmp / "vit.pth"), "--cnn_weights", str(tmp / "cnn.pth"),
           "--crops", args.crops, "--device", args.device, "--precision", precision, "--batch_size",
           str(args.batch_size), "--output", str(out), "--quiet"]
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {Path(r["dist"]).name: float(r["score"]) for r in csv.DictReader(out.open())}, wall, cpu


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--ref", default=None, help="reference file or folder (default: one reference, see above)")
    p.add_argument("--dist", default=None, help="distorted file or folder")
    p.add_argument("--distorted", type=int, default=8, help="distorted images of the default reference")
    p.add_argument("--crops", default="five")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32,bf16", help="comma list; one score.py run each")
    p.add_argument("--batch_size", type=int, default=4)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.ref:
            args.ref = args.dist = str(one_reference_set(tmp, args.distorted))
        pairs, problems = pair_paths(args.ref, args.dist)
        if problems or not pairs:
            sys.exit(f"no usable pairs in {args.ref} / {args.dist}: {problems[:3]}")
        reference = seeded_weights(tmp)
        sizes = {tuple(read_image(d).shape[:2]) for d, _ in pairs}
        print(f"{len(pairs)} pairs of {len({r for _, r in pairs})} reference(s), sizes {sorted(sizes)}, "
              f"crops={args.crops}, batch_size={args.batch_size}, device={args.device}, "
              f"threads={torch.get_num_threads()}; {describe_precision('bf16', args.device)}", flush=True)
        start, cpu_start = time.perf_counter(), time.process_time()
        expected = {}
        for dist_path, ref_path in pairs:
            dist, ref = image_tensor(dist_path).float() / 255, image_tensor(ref_path).float() / 255
            positions = crop_positions(args.crops, dist.shape[-2], dist.shape[-1], 224, seed=SEED)
            expected[dist_path.name] = reference.score_image(dist, ref, positions, 224).item()
        t_authors, cpu_authors = time.perf_counter() - start, time.process_time() - cpu_start
        print(f"authors' pattern in-process: {t_authors:.1f} s wall, {cpu_authors:.1f} s CPU", flush=True)
        for precision in args.precision.split(","):
            ours, t_ours, cpu_ours = score_py(args, tmp, precision)
            diff = max(abs(ours[k] - v) for k, v in expected.items())
            print(f"score.py whole process ({precision}): {t_ours:.1f} s wall -> {t_authors / t_ours:.2f}x, "
                  f"{cpu_ours:.1f} s CPU -> {cpu_authors / cpu_ours:.2f}x; max |score difference| {diff:.2e}",
                  flush=True)


if __name__ == "__main__":
    main()
