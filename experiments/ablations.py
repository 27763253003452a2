"""The paper's ablation study as one command: train and test a list of presets on one dataset, then a table.

    python experiments/ablations.py --dataset kadid10k --data_root /data/kadid10k --seeds 3 [train.py options]

Every preset (``options/presets/<name>.json`` or an options file) is trained on the same split(s), the options given
here on top, and tested with its ``best.pth``; the table goes to ``<checkpoints_dir>/ablations_<dataset>.md``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402

from experiments import declared, parse_splits, parser, publish, split_run  # noqa: E402
from ahiq.options.base_options import PRESETS as PRESETS_DIR  # noqa: E402
from ahiq.utils.errors import UserError, cli_main  # noqa: E402
from ahiq.utils.comparison import OVERALL as METRICS, spread_cells  # noqa: E402
from ahiq.utils.metrics import LABELS  # noqa: E402
from ahiq.utils.tables import markdown_table  # noqa: E402

# The authors' model and one row per ablation of the paper.
DEFAULT_PRESETS = ("ntire2022", "vit_only", "cnn_only", "no_deform", "no_fusion", "mean_pooling", "patch16")


def preset_path(name: str) -> Path:
    path = Path(name)
    if path.suffix == ".json" and path.is_file():
        return path
    path = PRESETS_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.json")))
        raise UserError(f"--presets {name}: no options/presets/{name}.json (presets: {known}) and no such file")
    return path


def trainable_parameters(checkpoint: Path) -> int:
    """Number of trained values in a checkpoint (fusion and head; the backbones are frozen)."""
    from ahiq.models.checkpoint import read_checkpoint  # torch only here: --help answers at once

    deform, regressor, _ = read_checkpoint(checkpoint)
    return sum(t.numel() for t in (*deform.values(), *regressor.values()))


def ablation_table(dataset: str, rows: list[dict]) -> str:
    """One markdown row per preset: parameters, median metrics over the splits, median training time."""
    seeds = len(rows[0]["runs"]) if rows else 0
    lines = [[row["preset"], f"{row['parameters']:,}",
              *(spread_cells([run[m] for run in row["runs"]], [run.get("notes", {}).get(m) for run in row["runs"]])[1]
                for m in METRICS),  # a figure missing on some split: its reason
              f"{np.median([run['seconds'] for run in row['runs']]):.1f} s"] for row in rows]
    return markdown_table(["preset", "trainable parameters", *(LABELS[m] for m in METRICS), "training time"], lines,
                          f"{dataset}, median over {seeds} split(s)")


@cli_main
def main(argv=None) -> str:
    p = parser(__doc__)
    declared(p, "train", "dataset", help="any train.py --dataset (pipal, csv, tid2013, ...)", required=True)
    p.add_argument("--presets", default=",".join(DEFAULT_PRESETS),
                   help="comma-separated preset names (options/presets/<name>.json) or options files")
    p.add_argument("--output", default=None, help="markdown file (default <checkpoints_dir>/ablations_<dataset>.md)")
    args, extra = parse_splits(p, argv, seeds=1)
    presets = [(name, preset_path(name)) for name in args.presets.split(",") if name.strip()]
    if not presets:
        raise UserError("--presets: give at least one preset")
    rows = []
    for name, path in presets:
        label, runs = Path(name).stem, []
        for seed in range(args.seeds):
            run_name = f"ablation_{label}_split{seed}"
            print(f"== {label}, split {seed + 1}/{args.seeds}: {run_name}", flush=True)
            runs.append(split_run(args, seed, run_name, extra, config=["--config", str(path)]))
        rows.append({"preset": label, "runs": runs,  # every split trains the same architecture
                     "parameters": trainable_parameters(Path(args.checkpoints_dir) / run_name / "best.pth")})
    output = Path(args.output) if args.output else Path(args.checkpoints_dir) / f"ablations_{args.dataset}.md"
    return publish(output, ablation_table(args.dataset, rows))


if __name__ == "__main__":
    main()
