"""score.py as a whole process against the authors' computation pattern in-process, on real image pairs.

    python benchmarks/score_process.py [--ref REF_DIR --dist DIST_DIR] [--crops five] [--precision fp32,bf16]

The authors' pattern in-process (models built) against ``python score.py`` per precision, start-up included, same
seeded weights; wall and CPU seconds. Default pairs: KADID-10k I01 from ../shared/data/mini, topped up with JPEG and noise.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.authors_pattern import AuthorsPattern  # noqa: E402
from benchmarks.common import image_tensor, machine, one_reference_set, parser, score_py  # noqa: E402
from ahiq.data.crops import crop_positions  # noqa: E402
from ahiq.data.images import pair_paths, read_image  # noqa: E402
from ahiq.models.ahiq import build_ahiq  # noqa: E402
from ahiq.models.config import SEED  # noqa: E402


def seeded_weights(tmp: Path) -> AuthorsPattern:
    """Seeded random weights written to ``tmp`` for score.py; the authors' pattern over them."""
    torch.manual_seed(0)
    torch.save(timm.create_model("vit_base_patch8_224").state_dict(), tmp / "vit.pth")
    torch.save(timm.create_model("resnet50").state_dict(), tmp / "cnn.pth")
    model = build_ahiq(vit_weights=str(tmp / "vit.pth"), cnn_weights=str(tmp / "cnn.pth")).eval()
    torch.save({"regressor_model_state_dict": model.regressor.state_dict(),
                "deform_net_model_state_dict": model.deform_net.state_dict()}, tmp / "ahiq.pth")
    return AuthorsPattern(model)


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
              f"{machine(args.device)}", flush=True)
        start, cpu_start = time.perf_counter(), time.process_time()
        expected = {}
        for dist_path, ref_path in pairs:
            dist, ref = image_tensor(dist_path).float() / 255, image_tensor(ref_path).float() / 255
            positions = crop_positions(args.crops, dist.shape[-2], dist.shape[-1], 224, seed=SEED)
            expected[dist_path.name] = reference.score_image(dist, ref, positions, 224).item()
        t_authors, cpu_authors = time.perf_counter() - start, time.process_time() - cpu_start
        print(f"authors' pattern in-process: {t_authors:.1f} s wall, {cpu_authors:.1f} s CPU", flush=True)
        for precision in args.precision.split(","):
            run = score_py(tmp / f"scores_{precision}.csv", "--ref", args.ref, "--dist", args.dist, "--checkpoint",
                           str(tmp / "ahiq.pth"), "--vit_weights", str(tmp / "vit.pth"), "--cnn_weights",
                           str(tmp / "cnn.pth"), "--crops", args.crops, "--device", args.device, "--precision",
                           precision, "--batch_size", str(args.batch_size), "--quiet")
            t_ours, cpu_ours = run["wall"], run["cpu"]
            diff = max(abs(run["scores"][k] - v) for k, v in expected.items())
            print(f"score.py whole process ({precision}): {t_ours:.1f} s wall -> {t_authors / t_ours:.2f}x, "
                  f"{cpu_ours:.1f} s CPU -> {cpu_authors / cpu_ours:.2f}x; max |score difference| {diff:.2e}",
                  flush=True)


if __name__ == "__main__":
    main()
