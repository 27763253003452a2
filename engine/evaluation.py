"""test.py's run: score a dataset split or folder pair, write the scores and extras, measure them against labels."""
from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from ahiq.data.datasets import DATASETS, label_files, write_generated
from ahiq.data.records import result_names
from ahiq.data.sampling import ScoreNorm
from ahiq.data.screening import describe
from ahiq.engine.baselines import check_baselines, compare_with_baselines, comparison_files
from ahiq.engine.config import TestConfig, parse_baselines
from ahiq.utils.errors import UserError, note
from ahiq.utils.io import atomic_write, atomic_write_text
from ahiq.utils.metrics import evaluate, format_metrics
from ahiq.utils.tables import csv_text, write_csv

if TYPE_CHECKING:
    from ahiq.data.records import Pair
    from ahiq.engine.device import RunContext
    from ahiq.engine.session import ScoringSession
    from ahiq.models.checkpoint import CheckpointRecord

NTIRE_FORBIDDEN = (",", "\r", "\n", '"')  # output.txt is bare name,score lines


def collect_pairs(cfg: TestConfig, ctx: RunContext) -> list[Pair]:
    """The pairs to score: a folder pair (labels optional; ``cfg.data`` None) or a split of ``cfg.data``."""
    if cfg.data is None:
        from ahiq.data.pipal import load_folder_pairs

        return load_folder_pairs(Path(cfg.ref_dir), Path(cfg.dist_dir), Path(cfg.labels) if cfg.labels else None)
    ctx.main_first(lambda: write_generated(cfg.data), "data written")  # the others read a generated set whole
    if cfg.split == "all":  # cross-dataset evaluation: every labelled pair, no split needed
        from ahiq.data.datasets import load_dataset

        return load_dataset(cfg.data)
    from ahiq.data.splits import prepare_splits

    saved = Path(cfg.checkpoints_dir) / cfg.name / "split.json"
    use_saved = not cfg.data.split_file and not cfg.data.split_ratio and saved.is_file()
    parts, info = prepare_splits(cfg.data, None, saved if use_saved else None)
    if use_saved and info.get("from") == str(saved):
        note(f"note: using the training split {saved}")
    split = cfg.split or ("test" if parts["test"] else "val")
    if not parts[split]:
        raise UserError(f"--split {split}: the split has no pairs (see --split_ratio / --split_file)")
    return parts[split]


def label_scale(cfg: TestConfig, record: CheckpointRecord, labels: list[float] | None) -> tuple[bool, str]:
    """Whether to map predictions onto the training label scale, and why (``--denormalize``, ``auto``: when plausible)."""
    norm = record.score_norm
    if cfg.denormalize is not True and cfg.denormalize is not False:  # auto
        lo, hi = record.label_range or ((norm["lo"], norm["hi"]) if norm and norm.get("kind") == "minmax"
                                        else (None, None))
        if not norm or lo is None:
            return False, "raw predictions: the checkpoint records no training label scale"
        tested = cfg.data.dataset if cfg.data else None
        if tested not in (None, "csv") and record.dataset and record.dataset != tested:
            return False, f"raw predictions: trained on {record.dataset}, tested on {tested} (another label scale)"
        if labels:
            slack = (hi - lo) / 2
            if min(labels) < lo - slack or max(labels) > hi + slack:
                return False, (f"raw predictions: labels {min(labels):g}..{max(labels):g} lie outside the training "
                               f"range {lo:g}..{hi:g}")
        return True, f"predictions on the training label scale {lo:g}..{hi:g}"
    if cfg.denormalize and norm:
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


def run_test(cfg: TestConfig, session: ScoringSession, pairs: list[Pair], show: Callable[[str], None]) -> dict | None:
    """Screen, guard, score, write, measure ``pairs``: the metrics (None without labels, or off rank 0). ``show``
    gets the metrics line as soon as it is known, then the baselines' table."""
    score = cfg.score
    pairs = session.screen(pairs)
    names = result_names(pairs)  # listed or bare names unless they repeat (LIVE: jpeg/img1.bmp)
    labelled = all(p.score is not None for p in pairs)
    bad = next((n for n in names if any(c in n for c in NTIRE_FORBIDDEN)), None) if cfg.ntire_zip else None
    if bad is not None:
        raise UserError(f"--ntire_zip: the name {bad!r} holds a comma, quote or line break, which the challenge's "
                        "bare name,score output.txt cannot hold; rename the file or leave out --ntire_zip")
    prefix = Path(score.output).with_name(Path(score.output).stem)
    # the labels copy sits beside --output; standard output (-) has no beside: the scores alone go there
    details = prefix.with_name(f"{prefix.name}_labels.csv") if labelled and str(score.output) != "-" else None
    labels = [cfg.labels] if cfg.labels else [] if cfg.data is None else label_files(cfg.data)
    extra = {f"--baselines table {f.name}: ": f for f in comparison_files(prefix)} if cfg.baselines else {}
    maps = names
    if cfg.data is not None and cfg.data.dataset == "csv":  # maps by the file's path from the folder (../ kept inside)
        root = cfg.data.root.resolve()
        maps = [os.path.relpath(p.dist, root) for p in pairs]
    session.guard(pairs, maps, {"labels copy ": details, **extra}, labels)
    if (cfg.plot or cfg.baselines is not None) and not labelled:
        raise UserError(f"{'--plot' if cfg.plot else '--baselines'} needs labels (--labels, or a labelled --dataset)")
    baselines = parse_baselines(cfg.baselines) if cfg.baselines is not None else None
    if baselines:
        check_baselines(baselines, pairs)  # weights at hand, images large enough: before any scoring
    record = session.record
    same_scale, why = label_scale(cfg, record, [p.score for p in pairs] if labelled else None)
    norm = ScoreNorm.from_dict(record.score_norm) if same_scale else ScoreNorm("none")
    note(f"test: {describe(pairs)}; {session.describe()}")
    start = time.perf_counter()
    scored = session.score(pairs, maps)
    if scored is None:  # another rank writes the results
        return None
    per_image = (time.perf_counter() - start) / len(pairs)
    scores = norm.inverse([scored[i] for i in range(len(pairs))])
    lines = csv_text(None, ([name, f"{s:.6f}"] for name, s in zip(names, scores)))  # the output and the zip's
    atomic_write_text(score.output, lines)
    session.finish(score.output)
    note(f"wrote {len(pairs)} scores to {score.output} ({per_image:.3f} s per image; {why})"
         + (f"; {len(pairs)} quality map(s) to {score.save_maps}" if score.save_maps else ""))
    if cfg.ntire_zip:
        model = session.model
        write_ntire_zip(cfg.ntire_zip, lines, per_image, session.ctx.device.type == "cuda",
                        f"AHIQ ({model.config.vit} + {model.config.cnn}), {score.crops} crops, {score.run.precision}")
        note(f"wrote {cfg.ntire_zip}")
    if not labelled:
        return None
    found = evaluate(scores, [p.score for p in pairs], same_scale=same_scale)
    show(f"test: {format_metrics(found.metrics, found.notes())}")
    if details is not None:
        write_csv(details, ["name", "prediction", "label", "raw_label"],
                  [[n, f"{s:.6f}", f"{p.score:.6f}", "" if p.raw is None else p.raw]
                   for n, p, s in zip(names, pairs, scores)])
    if baselines is not None:  # the same pairs and decoded images, every prediction oriented higher = better
        show(compare_with_baselines(pairs, scores, baselines, prefix, cfg.data.dataset if cfg.data else None,
                                    session.ctx.device, min_pairs=cfg.type_min_pairs))
    if cfg.plot:
        plot(cfg, record, norm, pairs, scores, found)
    return {**found.metrics, "notes": found.notes()}


def plot(cfg: TestConfig, record: CheckpointRecord, norm: ScoreNorm, pairs: list[Pair], scores, found) -> None:
    """The scatter plot of predictions against labels, with the fitted mapping."""
    from ahiq.utils.visual import save_scatter

    label_name = f"label ({Path(cfg.labels).name})" if cfg.ref_dir else DATASETS[cfg.data.dataset].label
    trained = DATASETS[record.dataset].label if record.dataset in DATASETS else record.dataset
    pred_name = (f"AHIQ prediction on the training labels' scale: {trained}" if norm.kind != "none" and trained
                 else "AHIQ prediction (network output)")
    shown = {k: found.metrics[k] for k in ("SRCC", "PLCC", "PLCC_fitted")}
    caption = (f"n={len(pairs)}: {format_metrics(shown, found.notes())}"
               + (f"\nred: the fitted mapping, {found.fit.form}" if found.fit else ""))
    save_scatter(np.asarray(scores), [p.score for p in pairs], caption, cfg.plot, label_name, pred_name, found.fit)
    note(f"wrote {cfg.plot}")
