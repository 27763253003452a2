"""Experiments built on train.py and test.py: each training run's test is derived from the run's own options."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ahiq.commands import test as test_script, train as train_script
from ahiq.options.base_options import OneDefaultHelpFormatter, OneLineErrors, add_option
from ahiq.options.test_options import TestOptions
from ahiq.options.train_options import TrainOptions
from ahiq.utils.errors import UserError
from ahiq.utils.io import atomic_write_text


def parser(doc: str, passes_to: str = "train.py") -> argparse.ArgumentParser:
    """An experiment's parser: its docstring's first line, defaults shown, every other option passed to ``passes_to``."""
    return OneLineErrors(description=doc.splitlines()[0], formatter_class=OneDefaultHelpFormatter, allow_abbrev=False,
                         epilog=f"Every other option is passed to {passes_to} (see python {passes_to} --help) and, "
                                "through the run's opt.json, to its test run.")


def declared(p: argparse.ArgumentParser, script: str, name: str, default=None, help: str | None = None,
             required: bool = False) -> None:
    """Option ``name`` of train.py or test.py (``script``) on an experiment's parser, as it is declared there (type,
    choices, range, help), with the experiment's ``default`` (and ``help``, where its meaning differs)."""
    options = {"train": TrainOptions, "test": TestOptions}[script]()
    add_option(p, options.options[name], script, default, help, required)


def parse_splits(p: argparse.ArgumentParser, argv, seeds: int) -> tuple[argparse.Namespace, list[str]]:
    """The known options, the options of repeated splits added, and the rest (for train.py)."""
    p.add_argument("--seeds", type=int, default=seeds, help="number of random splits (split seeds 0..K-1)")
    declared(p, "train", "split_ratio", "6:2:2", "train:val:test of every split")
    p.add_argument("--test_crops", default="five", help="crop protocol of the test runs")
    declared(p, "train", "checkpoints_dir", "./checkpoints", "where the runs and the tables go")
    args, extra = p.parse_known_args(argv)
    if not 1 <= args.seeds <= 1000:
        raise UserError("--seeds must be 1..1000")
    return args, extra


def split_run(args: argparse.Namespace, seed: int, name: str, train_argv=(), test_argv=(), config=()) -> dict:
    """Train run ``name`` on split ``seed`` of ``args.dataset`` (``config`` first, ``train_argv`` last), then
    :func:`test_run` on the split's test part: test.py's metrics and the ``seconds`` it all took."""
    run, start = Path(args.checkpoints_dir) / name, time.perf_counter()
    train_script.main([*config, "--dataset", args.dataset, "--name", name, "--checkpoints_dir", args.checkpoints_dir,
                       "--split_ratio", args.split_ratio, "--split_seed", str(seed), *train_argv])
    metrics = test_run(run, ["--split", "test", "--crops", args.test_crops, "--output", str(run / "test_results.txt"),
                             *test_argv])
    return {**metrics, "seconds": time.perf_counter() - start}


def test_run(run: Path, test_argv: list[str], data: bool = True) -> dict:
    """test.py's metrics for run folder ``run``'s ``best.pth`` with its own options (``opt.json``), ``test_argv`` on top;
    ``data=False`` leaves the run's data options out (another dataset)."""
    config = run / "opt.json"
    if not data:
        options = json.loads(config.read_text())
        options.pop("data", None)
        config = run / "opt_model.json"
        atomic_write_text(config, json.dumps(options, indent=2) + "\n")
    metrics = test_script.main(["--config", str(config), "--checkpoint", str(run / "best.pth"), *test_argv])
    if metrics is None:
        raise UserError(f"{run.name}: the test pairs have no labels")
    return metrics


def publish(path: Path, table: str) -> str:
    """An experiment's end: ``table`` written to ``path`` (atomically), printed and returned."""
    atomic_write_text(path, table)
    print(table)
    return table
