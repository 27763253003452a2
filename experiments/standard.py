"""Repeated reference-disjoint splits on one standard dataset: train and test over K seeds, then a table.

    python experiments/standard.py --dataset kadid10k --data_root /data/kadid10k --seeds 10 [train.py options]

For each seed s: ``train.py --split_ratio 6:2:2 --split_seed s --name <dataset>_split<s>`` (selecting on the
validation part), then ``test.py`` on that run's test part with its ``best.pth``. Prints a markdown table of
the median SRCC/PLCC/KRCC and PLCC/RMSE after the fitted logistic (and mean ± std) over the seeds, and writes it to
``<checkpoints_dir>/<dataset>_splits.md``. Unknown options go to train.py (and the shared ones to test.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import test as test_script  # noqa: E402
import train as train_script  # noqa: E402
from utils.errors import UserError, cli_main  # noqa: E402
from utils.io import atomic_write_text  # noqa: E402
from utils.metrics import LABELS  # noqa: E402

SHARED_WITH_TEST = {"--data_root", "--checkpoints_dir", "--device", "--precision", "--crop_size", "--patch_size", "--vit",
                    "--vit_blocks", "--cnn", "--cnn_stage", "--vit_kwargs", "--cnn_kwargs",
                    "--head_kwargs", "--fusion_kwargs", "--pretrained_backbones", "--vit_weights", "--cnn_weights",
                    "--num_workers", "--synthetic_refs", "--synthetic_size", "--normalization", "--seed",
                    "--lower_better", "--branches", "--fusion", "--pooling"}
METRICS = ("SRCC", "PLCC", "KRCC", "PLCC_fitted", "RMSE_fitted")


def shared_with_test(extra: list[str]) -> list[str]:
    """The options of ``extra`` that test.py understands too (flag + value pairs)."""
    out, i = [], 0
    while i < len(extra):
        flag = extra[i].split("=")[0]
        takes_value = "=" not in extra[i] and i + 1 < len(extra) and not extra[i + 1].startswith("--")
        if flag in SHARED_WITH_TEST:
            out += extra[i:i + 1 + takes_value]
        i += 1 + takes_value
    return out


def summary_table(dataset: str, results: list[dict]) -> str:
    header = " | ".join(LABELS[m] for m in METRICS)
    lines = [f"| {dataset} ({len(results)} splits) | {header} |", "|---|" + "---|" * len(METRICS)]
    # numpy: a metric that is NaN on some split (e.g. the fitted PLCC of fewer than 5 pairs) stays NaN
    lines.append("| median | " + " | ".join(f"{np.median([r[m] for r in results]):.4f}" for m in METRICS) + " |")
    spread = [(np.mean([r[m] for r in results]), np.std([r[m] for r in results])) for m in METRICS]
    lines.append("| mean ± std | " + " | ".join(f"{mu:.4f} ± {sd:.4f}" for mu, sd in spread) + " |")
    for r in results:
        lines.append(f"| split {r['seed']} | " + " | ".join(f"{r[m]:.4f}" for m in METRICS) + " |")
    return "\n".join(lines) + "\n"


@cli_main
def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help="tid2013, kadid10k, csiq, live (or pipal, synthetic)")
    p.add_argument("--seeds", type=int, default=10, help="number of random splits (seeds 0..K-1)")
    p.add_argument("--split_ratio", default="6:2:2", help="train:val:test")
    p.add_argument("--test_crops", default="five", help="crop protocol of the test runs")
    p.add_argument("--checkpoints_dir", default="./checkpoints")
    args, extra = p.parse_known_args(argv)
    if args.seeds < 1:
        raise UserError("--seeds must be >= 1")
    results = []
    for seed in range(args.seeds):
        name = f"{args.dataset}_split{seed}"
        common = ["--dataset", args.dataset, "--name", name, "--checkpoints_dir", args.checkpoints_dir]
        print(f"== split {seed + 1}/{args.seeds}: {name}", flush=True)
        train_script.main([*common, "--split_ratio", args.split_ratio, "--split_seed", str(seed), *extra])
        run = Path(args.checkpoints_dir) / name
        metrics = test_script.main([*common, "--split", "test", "--split_file", str(run / "split.json"),
                                    "--checkpoint", str(run / "best.pth"), "--crops", args.test_crops,
                                    "--output", str(run / "test_results.txt"), *shared_with_test(extra)])
        if metrics is None:
            raise UserError(f"{name}: the test split has no labels")
        results.append({"seed": seed, **metrics})
    table = summary_table(args.dataset, results)
    atomic_write_text(Path(args.checkpoints_dir) / f"{args.dataset}_splits.md", table)
    print(table)
    return table


if __name__ == "__main__":
    main()
