"""Cross-dataset evaluation: train on one set (or take a checkpoint), test on the whole of others, one table.

    python experiments/cross_dataset.py --checkpoint FILE --test csiq=/data/CSIQ live=/data/LIVE tid2013=/data/TID2013
    python experiments/cross_dataset.py --train kadid10k=/data/kadid10k --test tid2013=/data/TID2013 [train.py options]

Each test set is scored whole (``test.py --split all``): one row per set and metric in
``<checkpoints_dir>/<name>/cross_dataset.md`` and ``.csv``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from ahiq.commands import test as test_script, train as train_script  # noqa: E402
from experiments import declared, parser, publish, test_run  # noqa: E402
from ahiq.utils.comparison import ScoredSet  # noqa: E402
from ahiq.utils.errors import UserError, cli_main  # noqa: E402
from ahiq.utils.metrics import LABELS, evaluate, figure  # noqa: E402
from ahiq.utils.tables import markdown_table, read_csv, write_csv  # noqa: E402

COLUMNS = ("PLCC", "PLCC_fitted", "SRCC", "KRCC")


def named_root(text: str) -> tuple[str, str]:
    name, sep, root = text.partition("=")
    if not sep or not name or not root:
        raise UserError(f"{text}: give a dataset as NAME=FOLDER, e.g. csiq=/data/CSIQ")
    return name.strip().lower(), root


@cli_main
def main(argv=None) -> str:
    p = parser(__doc__, "train.py (with --checkpoint: test.py)")
    p.add_argument("--train", type=named_root, default=None, help="NAME=FOLDER of the training set (or --checkpoint)")
    p.add_argument("--checkpoint", default=None, help="a trained checkpoint instead of training (the released one: "
                   "checkpoints/ahiq_pipal/AHIQ_vit_p8_epoch33-da3ea303.pth after sh download.sh)")
    p.add_argument("--test", type=named_root, nargs="+", required=True, help="NAME=FOLDER of each test set")
    p.add_argument("--name", default=None, help="run folder under --checkpoints_dir (default cross_<train set>)")
    declared(p, "train", "checkpoints_dir", "./checkpoints", "where the run and the table go")
    declared(p, "test", "crops", help="test.py's crop protocol (default test.py's, the authors' random:20)")
    declared(p, "test", "baselines", help="classical metrics on the same pairs, e.g. psnr,ssim (see test.py)")
    args, extra = p.parse_known_args(argv)
    if bool(args.train) == bool(args.checkpoint):
        raise UserError("give --train NAME=FOLDER to train, or --checkpoint FILE (one of the two)")
    if args.baselines is not None:  # piq and torch only now: --help answers at once
        from ahiq.engine.baselines import check_baselines, parse_baselines

        check_baselines(parse_baselines(args.baselines))
    name = args.name or f"cross_{args.train[0] if args.train else 'dataset'}"
    run = Path(args.checkpoints_dir) / name
    common = ["--name", name, "--checkpoints_dir", args.checkpoints_dir]
    if args.train:
        train_script.main(["--dataset", args.train[0], "--data_root", args.train[1], *common, *extra])
    rows = []
    for dataset, root in args.test:
        output = run / f"cross_{dataset}.txt"
        test_argv = ["--dataset", dataset, "--data_root", root, "--split", "all", "--output", str(output),
                     *(["--crops", args.crops] if args.crops else []),
                     *(["--baselines", args.baselines] if args.baselines is not None else [])]
        if args.train:  # the run's own model options; the data are the test set's
            metrics = test_run(run, test_argv, data=False)
        else:
            metrics = test_script.main([*test_argv, "--checkpoint", args.checkpoint, *common, *extra])
            if metrics is None:
                raise UserError(f"{dataset}: no labels to test against")
        found = {"AHIQ": (metrics, metrics.get("notes", {}))}
        if args.baselines is not None:  # every metric from the same per-pair file (AHIQ's equals test.py's)
            scored = ScoredSet.read(output.with_name(f"{output.stem}_baselines.csv"))
            found = {m: (e.metrics, e.notes()) for m, e in
                     ((m, evaluate(v, scored.labels)) for m, v in scored.scores.items())}
        pairs = len(read_csv(output))  # test.py's name,score rows
        rows += [[dataset, metric, pairs, *((m[k], notes.get(k)) for k in COLUMNS),
                  notes.get("fit") or figure(float("nan"), notes.get("PLCC_fitted"))]
                 for metric, (m, notes) in found.items()]
    header = ["test set", "metric", "pairs", *(LABELS[k] for k in COLUMNS), "fit"]
    title = (f"cross-dataset: trained on {args.train[0] if args.train else args.checkpoint}, each test set whole "
             "(PLCC(fitted): after the monotonic logistic fitted on that set; fit: its form)")
    cells = lambda r, digits: [*r[:3], *(figure(v, why, digits) for v, why in r[3:-1]), r[-1]]  # noqa: E731
    write_csv(run / "cross_dataset.csv", header, [cells(r, 6) for r in rows])
    return publish(run / "cross_dataset.md", markdown_table(header, [cells(r, 4) for r in rows], title))


if __name__ == "__main__":
    main()
