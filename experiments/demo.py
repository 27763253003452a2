"""The offline demo that ``sh demo.sh`` runs: generate a synthetic set, train, validate, score a few pairs.

    python experiments/demo.py [--demo_dir DIR] [--device cpu] [--precision fp32|bf16] [train.py options]

Nothing is downloaded; a fixed schedule of 180 steps (see README, "The demo"), so every run on a machine ends with
the same ``demo:`` line. Unknown options go to train.py, after the demo's own.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ahiq.commands import score as score_script, train as train_script  # noqa: E402
from experiments import parser  # noqa: E402
from ahiq.utils.errors import cli_main  # noqa: E402

SYNTHETIC_REFS, SIZE = 150, 32


@cli_main
def main(argv: list[str] | None = None) -> str:
    p = parser(__doc__)
    p.add_argument("--demo_dir", default="./runs/demo", help="holds the data and the checkpoints (sh demo.sh: $DEMO_DIR)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (sh demo.sh: $DEVICE)")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16"],
                   help="default: bf16 where the hardware computes it natively, else fp32")
    args, extra = p.parse_known_args(argv)
    from ahiq.engine.device import native_bf16  # torch only now: --help answers at once
    from ahiq.models.weights import missing_pretrained

    started = time.perf_counter()
    demo_dir = Path(args.demo_dir)
    precision = args.precision or ("bf16" if native_bf16(args.device) else "fp32")
    pretrained = not missing_pretrained()
    weights = "pretrained backbones" if pretrained else "random-init backbones"
    print(f"demo: data={demo_dir / 'data'}, {weights}, {SIZE}x{SIZE} crops, {precision}, device={args.device} "
          "(short CPU schedule: 1 epoch, 180 steps, one cosine decay from lr 3e-4, --feature_lr_scale 0.3, "
          "--grad_clip 0.5)", flush=True)
    best = train_script.main([  # a fixed schedule; a demo run again replaces its own run (--overwrite)
        "--dataset", "synthetic", "--data_root", str(demo_dir / "data"), "--synthetic_refs", str(SYNTHETIC_REFS),
        "--synthetic_size", str(SIZE), "--split_ratio", "4:1", "--crop_size", str(SIZE), "--batch_size", "16",
        "--learning_rate", "3e-4", "--feature_lr_scale", "0.3", "--grad_clip", "0.5", "--T_max", "0", "--n_epoch", "1",
        "--val_freq", "1", "--val_crops", "center", "--pretrained_backbones", str(pretrained).lower(),
        "--precision", precision, "--device", args.device, "--checkpoints_dir", str(demo_dir / "checkpoints"),
        "--name", "demo", "--overwrite", *extra])
    run = demo_dir / "checkpoints" / "demo"
    splits = json.loads((run / "split.json").read_text())["splits"]

    # Score the six distortion types at level 03 of the first held-out reference with the best checkpoint.
    pairs = demo_dir / "pairs"
    shutil.rmtree(pairs, ignore_errors=True)
    pairs.mkdir(parents=True)
    held_out = sorted(splits["val"])[0].upper()
    for path in sorted((demo_dir / "data" / "Train_Dis").glob(f"{held_out}_0[0-5]_03.bmp")):
        shutil.copy(path, pairs / path.name)
    score_script.main(["--ref", str(demo_dir / "data" / "Train_Ref"), "--dist", str(pairs), "--checkpoint",
                       str(run / "best.pth"), "--crops", "center", "--device", args.device,
                       "--output", str(demo_dir / "pairs_scores.csv")])
    data = (f"synthetic set, {len(splits['train']) + len(splits['val'])} refs of {SIZE}x{SIZE}, "
            f"{len(splits['val'])} held-out refs")
    line = (f"demo: val SRCC={best['SRCC']:.4f} PLCC={best['PLCC']:.4f} ({data}; {weights}, {precision}, "
            f"epoch {best['epoch']})")
    print(f"(demo took {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    print(line, flush=True)
    return line


if __name__ == "__main__":
    main()
