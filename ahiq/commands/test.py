"""Score every pair of a dataset split or a folder pair with a trained AHIQ checkpoint.

    python test.py --checkpoint FILE --ref_dir REF --dist_dir DIST [--labels FILE] [--ntire_zip sub.zip]
    python test.py --name ahiq_pipal --dataset tid2013 --data_root DATA --split all

Writes ``name,score`` lines to ``--output`` (default: beside the checkpoint, see ``options.test_options.
default_output``); with labels prints ``test: SRCC=... PLCC=... KRCC=... PLCC(fitted)=... RMSE(fitted)=... fit=...
[RMSE=...] main=...`` (plain RMSE only when the predictions are on the labels' scale; a missing figure as
``n/a(<reason>)``). Every pair is scored (no dropped batch), all inputs are checked before
any scoring, files are written atomically, and under ``torchrun`` the ranks share the pairs by reference.
"""
from __future__ import annotations

import os
import sys
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from ahiq.data.datasets import DATASETS, DataConfig, label_files
from ahiq.engine.config import parse_baselines
from ahiq.options.test_options import TestOptions
from ahiq.options.train_options import data_config
from ahiq.utils.errors import UserError, cli_main, note
from ahiq.utils.io import atomic_write

if TYPE_CHECKING:
    from ahiq.data.records import Pair
    from ahiq.models.checkpoint import CheckpointRecord

NTIRE_FORBIDDEN = (",", "\r", "\n", '"')  # output.txt is bare name,score lines


def collect_pairs(opt, cfg: DataConfig | None) -> list[Pair]:
    """The pairs to score: a folder pair (labels optional; ``cfg`` None) or a split of ``--dataset`` (``cfg``)."""
    if cfg is None:
        from ahiq.data.pipal import load_folder_pairs

        return load_folder_pairs(Path(opt.ref_dir), Path(opt.dist_dir), Path(opt.labels) if opt.labels else None)
    if opt.split == "all":  # cross-dataset evaluation: every labelled pair, no split needed
        from ahiq.data.datasets import load_dataset

        return load_dataset(cfg)
    from ahiq.data.splits import prepare_splits

    saved = Path(opt.checkpoints_dir) / opt.name / "split.json"
    use_saved = not opt.split_file and not opt.split_ratio and saved.is_file()
    parts, info = prepare_splits(cfg, None, saved if use_saved else None)
    if use_saved and info.get("from") == str(saved):
        note(f"note: using the training split {saved}")
    split = opt.split or ("test" if parts["test"] else "val")
    if not parts[split]:
        raise UserError(f"--split {split}: the split has no pairs (see --split_ratio / --split_file)")
    return parts[split]


def label_scale(opt, record: CheckpointRecord, labels: list[float] | None) -> tuple[bool, str]:
    """Whether to map predictions onto the training label scale (and compare them with labels directly), and why.

    ``--denormalize true/false`` decides; ``auto``: only with a training scale in the checkpoint, the same
    dataset as in training (any, for folder pairs and csv files), and labels (when given) inside the training
    label range widened by half its width. Cross-dataset predictions stay raw: correlations and the fitted
    PLCC/RMSE compare them with labels on any scale.
    """
    norm = record.score_norm
    if opt.denormalize is not True and opt.denormalize is not False:  # auto
        lo, hi = record.label_range or ((norm["lo"], norm["hi"]) if norm and norm.get("kind") == "minmax"
                                        else (None, None))
        if not norm or lo is None:
            return False, "raw predictions: the checkpoint records no training label scale"
        if not opt.ref_dir and opt.dataset != "csv" and record.dataset and record.dataset != opt.dataset:
            return False, f"raw predictions: trained on {record.dataset}, tested on {opt.dataset} (another label scale)"
        if labels:
            slack = (hi - lo) / 2
            if min(labels) < lo - slack or max(labels) > hi + slack:
                return False, (f"raw predictions: labels {min(labels):g}..{max(labels):g} lie outside the training "
                               f"range {lo:g}..{hi:g}")
        return True, f"predictions on the training label scale {lo:g}..{hi:g}"
    if opt.denormalize and norm:
        return True, "predictions on the training label scale (--denormalize true)"
    return False, "raw predictions" + (" (--denormalize false)" if norm else ": the checkpoint records no scale")


def write_ntire_zip(path: str, lines: str, seconds_per_image: float, on_gpu: bool, description: str) -> None:
    """The NTIRE IQA submission: ``output.txt`` (name,score) and ``readme.txt`` (runtime, device, data)."""
    readme = (f"runtime per image [s] : {seconds_per_image:.4f}\n"
              f"CPU[1] / GPU[0] : {0 if on_gpu else 1}\n"
              "Extra Data [1] / No Extra Data [0] : 0\n"
              f"Other description : {description}\n")

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("output.txt", lines)
            zf.writestr("readme.txt", readme)

    atomic_write(path, write)


@cli_main
def main(argv: list[str] | None = None, prog: str | None = None) -> dict | None:
    options = TestOptions(prog)
    opt = options.parse(argv)
    # The engine (torch, timm, OpenCV, SciPy) loads only now: --help and a mistyped option answer at once.
    from ahiq.engine.session import ScoringSession

    cfg = options.config(opt)
    # outputs checked for writing, the output locked, then the checkpoint read (and refused, if it must be), before
    # anything else; the lock is released however the run ends
    with ScoringSession(cfg, outputs={"--ntire_zip ": opt.ntire_zip, "--plot ": opt.plot}) as session:
        return run(opt, cfg, session)


def run(opt, cfg, session) -> dict | None:
    """Collect, screen, guard, score, write, measure: the run of :func:`main` inside its session."""
    import numpy as np

    from ahiq.data.records import result_names
    from ahiq.data.sampling import ScoreNorm
    from ahiq.data.screening import describe
    from ahiq.data.splits import run_data_check
    from ahiq.engine.baselines import check_baselines, compare_with_baselines, comparison_files
    from ahiq.utils.metrics import evaluate, format_metrics
    from ahiq.utils.tables import csv_text, write_csv

    data = None if opt.ref_dir else data_config(opt)
    pairs = collect_pairs(opt, data)
    if opt.check_data:
        sys.exit(1 if run_data_check({"test": pairs}, session.crop_size)["test"] else 0)
    pairs = session.screen(pairs)
    names = result_names(pairs)  # listed or bare names unless they repeat (LIVE: jpeg/img1.bmp)
    if data is not None and data.dataset == "csv":  # maps by the file's path from the folder (../ kept inside maps)
        root = data.root.resolve()
        map_names = [os.path.relpath(p.dist, root) for p in pairs]
    else:
        map_names = names
    labelled = all(p.score is not None for p in pairs)
    bad = next((n for n in names if any(c in n for c in NTIRE_FORBIDDEN)), None) if opt.ntire_zip else None
    if bad is not None:
        raise UserError(f"--ntire_zip: the name {bad!r} holds a comma, quote or line break, which the challenge's "
                        "bare name,score output.txt cannot hold; rename the file or leave out --ntire_zip")
    prefix = Path(cfg.output).with_name(Path(cfg.output).stem)
    # the labels copy sits beside --output; standard output (-) has no beside: the scores alone go there
    details = prefix.with_name(f"{prefix.name}_labels.csv") if labelled and str(cfg.output) != "-" else None
    labels = [opt.labels] if opt.labels else [] if data is None else label_files(data)
    extra = {f"--baselines table {f.name}: ": f for f in comparison_files(prefix)} if opt.baselines else {}
    session.guard(pairs, map_names, {"labels copy ": details, **extra}, labels)
    if (opt.plot or opt.baselines is not None) and not labelled:
        raise UserError(f"{'--plot' if opt.plot else '--baselines'} needs labels (--labels, or a labelled --dataset)")
    baselines = parse_baselines(opt.baselines) if opt.baselines is not None else None
    if baselines:
        check_baselines(baselines, pairs)  # weights at hand, images large enough: before any scoring
    record = session.record
    same_scale, why = label_scale(opt, record, [p.score for p in pairs] if labelled else None)
    norm = ScoreNorm.from_dict(record.score_norm) if same_scale else ScoreNorm("none")
    if session.ctx.main:
        print(f"test: {describe(pairs)}; {session.describe()}", file=sys.stderr)
    start = time.perf_counter()
    scored = session.score(pairs, map_names)
    if scored is None:  # another rank writes the results
        return None
    per_image = (time.perf_counter() - start) / len(pairs)
    scores = norm.inverse([scored[i] for i in range(len(pairs))])
    write_csv(cfg.output, None, [[name, f"{s:.6f}"] for name, s in zip(names, scores)])
    session.finish(cfg.output)
    print(f"wrote {len(pairs)} scores to {cfg.output} ({per_image:.3f} s per image; {why})"
          + (f"; {len(pairs)} quality map(s) to {opt.save_maps}" if opt.save_maps else ""), file=sys.stderr)
    if opt.ntire_zip:
        model = session.model
        write_ntire_zip(opt.ntire_zip, csv_text(None, ([n, f"{s:.6f}"] for n, s in zip(names, scores))), per_image,
                        session.ctx.device.type == "cuda",
                        f"AHIQ ({model.config.vit} + {model.config.cnn}), {opt.crops} crops, {opt.precision}")
        print(f"wrote {opt.ntire_zip}", file=sys.stderr)
    if not labelled:
        return None
    found = evaluate(scores, [p.score for p in pairs], same_scale=same_scale)
    metrics = found.metrics
    if details is not None:
        write_csv(details, ["name", "prediction", "label", "raw_label"],
                  [[n, f"{s:.6f}", f"{p.score:.6f}", "" if p.raw is None else p.raw]
                   for n, p, s in zip(names, pairs, scores)])
    print(f"test: {format_metrics(metrics, found.notes())}")
    if baselines is not None:  # the same pairs and decoded images, every prediction oriented higher = better
        print(compare_with_baselines(pairs, scores, baselines, prefix, None if opt.ref_dir else opt.dataset,
                                     session.ctx.device, min_pairs=opt.type_min_pairs))
    if opt.plot:
        from ahiq.utils.visual import save_scatter

        label_name = f"label ({Path(opt.labels).name})" if opt.ref_dir else DATASETS[opt.dataset].label
        trained = DATASETS[record.dataset].label if record.dataset in DATASETS else record.dataset
        pred_name = (f"AHIQ prediction on the training labels' scale: {trained}" if norm.kind != "none" and trained
                     else "AHIQ prediction (network output)")
        shown = {k: metrics[k] for k in ("SRCC", "PLCC", "PLCC_fitted")}
        caption = (f"n={len(pairs)}: {format_metrics(shown, found.notes())}"
                   + (f"\nred: the fitted mapping, {found.fit.form}" if found.fit else ""))
        save_scatter(np.asarray(scores), [p.score for p in pairs], caption, opt.plot, label_name, pred_name, found.fit)
        print(f"wrote {opt.plot}", file=sys.stderr)
    return {**metrics, "notes": found.notes()}  # notes: why a figure is missing, the fitted mapping's form


if __name__ == "__main__":
    main()
