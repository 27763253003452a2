"""Repeated reference-disjoint splits on one standard dataset: train and test over K seeds, then a table.

    python experiments/standard.py --dataset kadid10k --data_root /data/kadid10k --seeds 10 [train.py options]

For each seed s, ``train.py --split_seed s --name <dataset>_split<s>``, then ``test.py`` on its test part; the table
(median, mean ± std) goes to ``<checkpoints_dir>/<dataset>_splits.md``, with ``--baselines`` a row per metric too.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from experiments import declared, parse_splits, parser, publish, split_run  # noqa: E402
from ahiq.utils.errors import cli_main  # noqa: E402
from ahiq.utils.comparison import OVERALL as METRICS, fit_cell, spread_cells  # noqa: E402
from ahiq.utils.metrics import LABELS, figure  # noqa: E402
from ahiq.utils.tables import markdown_table  # noqa: E402


def summary_table(dataset: str, results: list[dict]) -> str:
    """Median and mean ± std over the splits, then one row per split; a figure missing on a split shows its reason."""
    notes = [r.get("notes", {}) for r in results]
    cells = [spread_cells([r[m] for r in results], [n.get(m) for n in notes]) for m in METRICS]
    forms = fit_cell([n.get("fit") for n in notes], [n.get("PLCC_fitted") for n in notes])
    rows = [["median", *(c[1] for c in cells), forms],
            ["mean ± std", *(c[2] if c[2].startswith("n/a") else f"{c[2]} ± {c[3]}" for c in cells), ""]]
    rows += [[f"split {r['seed']}", *(figure(r[m], n.get(m)) for m in METRICS), fit_cell([n.get("fit")], [n.get(
        "PLCC_fitted")])] for r, n in zip(results, notes)]
    return markdown_table([f"{dataset} ({len(results)} splits)", *(LABELS[m] for m in METRICS), "fit"], rows)


@cli_main
def main(argv=None) -> str:
    p = parser(__doc__)
    declared(p, "train", "dataset", help="tid2013, kadid10k, csiq, live (or pipal, synthetic, csv)", required=True)
    declared(p, "test", "baselines", help="classical metrics on each split's test pairs (test.py --baselines), e.g. "
             "psnr,ssim: their rows and the per-type table join the table")
    declared(p, "test", "type_min_pairs", 5)
    declared(p, "train", "split_by", "reference")
    args, extra = parse_splits(p, argv, seeds=10)
    baselines = [] if args.baselines is None else ["--baselines", args.baselines, "--type_min_pairs",
                                                   str(args.type_min_pairs)]
    if baselines:  # piq and torch only now: --help answers at once
        from ahiq.engine.baselines import check_baselines, parse_baselines, summarise_splits

        check_baselines(parse_baselines(args.baselines))  # before any training
    root, results = Path(args.checkpoints_dir), []
    for seed in range(args.seeds):
        name = f"{args.dataset}_split{seed}"
        print(f"== split {seed + 1}/{args.seeds}: {name}", flush=True)
        results.append({"seed": seed, **split_run(args, seed, name, ["--split_by", args.split_by, *extra], baselines)})
    note = "[split by pair: the parts share references]" if args.split_by == "pair" else ""
    table = summary_table(f"{args.dataset} {note}".strip(), results)
    if baselines:
        table += "\n" + summarise_splits([root / f"{args.dataset}_split{r['seed']}" / "test_results_baselines.csv"
                                          for r in results], root / args.dataset, args.dataset, args.type_min_pairs,
                                         note)
    return publish(root / f"{args.dataset}_splits.md", table)


if __name__ == "__main__":
    main()
