"""Score every pair of a dataset split or a folder pair with a trained AHIQ checkpoint.

    python test.py --checkpoint FILE --ref_dir REF --dist_dir DIST [--labels FILE] [--ntire_zip sub.zip]
    python test.py --name ahiq_pipal --dataset tid2013 --data_root DATA --split all

Writes ``name,score`` lines to ``--output`` (default ``checkpoints/<name>/results.txt``); with labels
prints ``test: SRCC=... PLCC=... KRCC=... PLCC(fitted)=... RMSE(fitted)=... [RMSE=...] main=...``
(plain RMSE only when the predictions are on the labels' scale). Every pair is scored (no dropped batch),
all inputs are checked before any scoring, and files are written atomically.
"""
from __future__ import annotations

import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from data.datasets import LABEL_NAMES, ScoreNorm, describe, screen_pairs
from data.records import Pair, result_names
from data.splits import load_pairs, prepare_splits, run_data_check
from engine.device import describe_precision
from engine.pipeline import describe_backbones, open_checkpoint, prepare_model, score_and_map, training_crop_size
from options.base_options import backbone_request
from options.test_options import TestOptions
from utils.errors import UserError, cli_main
from utils.io import atomic_write, atomic_write_text, check_writable
from utils.metrics import format_metrics, iqa_metrics


def collect_pairs(opt) -> list[Pair]:
    """The pairs to score: a folder pair (labels optional) or a split of ``--dataset``."""
    if opt.ref_dir:
        from data.pipal import load_folder_pairs

        return load_folder_pairs(Path(opt.ref_dir), Path(opt.dist_dir), Path(opt.labels) if opt.labels else None)
    if opt.split == "all":  # cross-dataset evaluation: every labelled pair, no split needed
        return load_pairs(opt)
    saved = Path(opt.checkpoints_dir) / opt.name / "split.json"
    use_saved = not opt.split_file and not opt.split_ratio and saved.is_file()
    parts, info = prepare_splits(opt, None, saved if use_saved else None)
    if use_saved and info.get("from") == str(saved):
        print(f"note: using the training split {saved}", file=sys.stderr)
    split = opt.split or ("test" if parts["test"] else "val")
    if not parts[split]:
        raise UserError(f"--split {split}: the split has no pairs (see --split_ratio / --split_file)")
    return parts[split]


def resolve_checkpoint(opt) -> str | None:
    if opt.checkpoint == "none":
        return None
    path = Path(opt.checkpoint) if opt.checkpoint else Path(opt.checkpoints_dir) / opt.name / "best.pth"
    if path.is_dir():
        raise UserError(f"--checkpoint {path}: is a folder; give the checkpoint file inside it (e.g. {path}/best.pth)")
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; give --checkpoint FILE (sh download.sh fetches the "
                        "released one), train first, or --checkpoint none for random heads")
    return str(path)  # load_model reads it before any scoring: a file that is not AHIQ's fails there


def label_scale(opt, meta: dict, labels: list[float] | None) -> tuple[bool, str]:
    """Whether to map predictions onto the training label scale (and compare them with labels directly), and why.

    ``--denormalize true/false`` decides; ``auto``: only with a training scale in the checkpoint, the same
    dataset as in training (any, for folder pairs and csv files), and labels (when given) inside the training
    label range widened by half its width. Cross-dataset predictions stay raw: correlations and the fitted
    PLCC/RMSE compare them with labels on any scale.
    """
    norm = meta.get("score_norm")
    if opt.denormalize is not True and opt.denormalize is not False:  # auto
        trained_on = (meta.get("split") or {}).get("dataset")
        lo, hi = meta.get("label_range") or ((norm["lo"], norm["hi"]) if norm and norm.get("kind") == "minmax"
                                             else (None, None))
        named = not opt.ref_dir and opt.dataset != "csv"
        if not norm or lo is None:
            return False, "raw predictions: the checkpoint records no training label scale"
        if named and trained_on and trained_on != opt.dataset:
            return False, f"raw predictions: trained on {trained_on}, tested on {opt.dataset} (another label scale)"
        if labels:
            slack = (hi - lo) / 2
            if min(labels) < lo - slack or max(labels) > hi + slack:
                return False, (f"raw predictions: labels {min(labels):g}..{max(labels):g} lie outside the training "
                               f"range {lo:g}..{hi:g}")
        return True, f"predictions on the training label scale {lo:g}..{hi:g}"
    if opt.denormalize and norm:
        return True, "predictions on the training label scale (--denormalize true)"
    return False, "raw predictions" + (" (--denormalize false)" if norm else ": the checkpoint records no scale")


def write_ntire_zip(path: Path, lines: str, seconds_per_image: float, on_gpu: bool, description: str) -> None:
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
def main(argv=None) -> dict | None:
    options = TestOptions()
    opt = options.parse(argv)
    checkpoint = resolve_checkpoint(opt)
    contents = open_checkpoint(checkpoint)
    if opt.crop_size is None:
        opt.crop_size = training_crop_size(contents)
    pairs = collect_pairs(opt)
    if opt.check_data:
        sys.exit(1 if run_data_check({"test": pairs}, opt.crop_size, decode=True)["test"] else 0)
    output = Path(opt.output) if opt.output else Path(opt.checkpoints_dir) / opt.name / "results.txt"
    for path, what in ((output, "--output "), (opt.ntire_zip, "--ntire_zip "), (opt.plot, "--plot ")):
        check_writable(path, what)  # before any model is built: a bad place fails now, not after the work
    check_writable(opt.save_maps, "--save_maps ", folder=True)
    pairs = screen_pairs(pairs, opt.crop_size, opt.skip_bad)
    labelled = all(p.score is not None for p in pairs)
    if opt.plot and not labelled:
        raise UserError("--plot needs labels (--labels, or a labelled --dataset)")
    model, device = prepare_model(checkpoint, **backbone_request(opt, options.explicit), device=opt.device,
                                       seed=opt.seed, compile=opt.compile, overrides=options.arch_overrides(opt),
                                       contents=contents)
    meta = model.checkpoint_meta
    same_scale, why = label_scale(opt, meta, [p.score for p in pairs] if labelled else None)
    norm = ScoreNorm.from_dict(meta.get("score_norm")) if same_scale else ScoreNorm("none")
    print(f"test: {describe(pairs)}; checkpoint={checkpoint or 'none (random heads)'}; backbones: "
          f"{describe_backbones(model)}; crops={opt.crops} crop_size={opt.crop_size} device={device} "
          f"precision={describe_precision(opt.precision, device)}", file=sys.stderr)

    names = result_names(pairs)  # listed or bare names unless they repeat (LIVE: jpeg/img1.bmp)
    start = time.perf_counter()
    results = score_and_map(model, [(p.dist, p.ref) for p in pairs], crops=opt.crops, crop_size=opt.crop_size,
                            seed=opt.seed, batch_size=opt.batch_size, precision=opt.precision,
                            num_workers=opt.num_workers, maps_dir=opt.save_maps, flip_tta=opt.flip_tta, names=names)
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_image = (time.perf_counter() - start) / len(results)
    scores = norm.inverse([r.score for r in results])
    text = "".join(f"{name},{s:.6f}\n" for name, s in zip(names, scores))
    atomic_write_text(output, text)
    print(f"wrote {len(results)} scores to {output} ({per_image:.3f} s per image; {why})"
          + (f"; {len(results)} quality maps to {opt.save_maps}" if opt.save_maps else ""), file=sys.stderr)
    if opt.ntire_zip:
        write_ntire_zip(Path(opt.ntire_zip), text, per_image, device.type == "cuda",
                        f"AHIQ ({model.config.vit} + {model.config.cnn}), {opt.crops} crops, {opt.precision}")
        print(f"wrote {opt.ntire_zip}", file=sys.stderr)
    if not labelled:
        return None
    metrics = iqa_metrics(scores, [p.score for p in pairs], same_scale=same_scale)
    details = output.with_name(f"{output.stem}_labels.csv")
    atomic_write_text(details, "name,prediction,label,raw_label\n" + "".join(
        f"{name},{s:.6f},{p.score:.6f},{p.raw if p.raw is not None else ''}\n" for name, p, s in zip(names, pairs, scores)))
    print(f"test: {format_metrics(metrics)}")
    if opt.plot:
        from utils.visual import save_scatter

        trained_on = (meta.get("options") or {}).get("dataset")
        label_name = (f"label ({Path(opt.labels).name})" if opt.ref_dir
                      else LABEL_NAMES.get(opt.dataset, opt.dataset))
        pred_name = (f"AHIQ prediction on the training labels' scale: {LABEL_NAMES.get(trained_on, trained_on)}"
                     if norm.kind != "none" and trained_on else "AHIQ prediction (network output)")
        save_scatter(np.asarray(scores), [p.score for p in pairs], metrics, opt.plot, label_name, pred_name)
        print(f"wrote {opt.plot}", file=sys.stderr)
    return metrics


if __name__ == "__main__":
    main()
