"""Score image pairs with AHIQ: ``python score.py --ref REF --dist DIST [--checkpoint FILE] ...``.

REF and DIST are files or folders; folders pair by file name or by the datasets' naming rule. Prints a
table and optionally writes ``--output`` CSV (``dist,ref,score``). See ``python score.py --help``.
"""
from __future__ import annotations

import csv
import io
import sys
import time

from data.datasets import screen_pairs
from data.images import pair_paths
from data.records import Pair
from engine.device import describe_precision
from engine.pipeline import describe_backbones, open_checkpoint, prepare_model, score_and_map, training_crop_size
from options.base_options import backbone_request
from options.score_options import ScoreOptions
from utils.errors import cli_main
from data.records import result_names
from utils.io import atomic_write_text, check_writable


def collect_pairs(opt) -> list[Pair]:
    """The pairs to score; every problem is reported before anything is scored."""
    pairs, problems = pair_paths(opt.ref, opt.dist)
    return screen_pairs([Pair(d, r) for d, r in pairs], opt.crop_size, opt.skip_bad, problems)


@cli_main
def main(argv=None) -> None:
    options = ScoreOptions()
    opt = options.parse(argv)
    check_writable(opt.output, "--output ")  # before any scoring: a bad place fails now, not after the work
    check_writable(opt.save_maps, "--save_maps ", folder=True)
    contents = open_checkpoint(opt.checkpoint)
    if opt.crop_size is None:
        opt.crop_size = training_crop_size(contents)
    pairs = collect_pairs(opt)
    model, device = prepare_model(opt.checkpoint, **backbone_request(opt, options.explicit), device=opt.device,
                                       seed=opt.seed, compile=opt.compile, overrides=options.arch_overrides(opt),
                                       contents=contents)
    print(f"model: checkpoint={opt.checkpoint or 'none (random heads)'}; backbones: {describe_backbones(model)}; "
          f"crop_size={opt.crop_size}; device={device} precision={describe_precision(opt.precision, device)}",
          file=sys.stderr)
    start = time.perf_counter()
    results = score_and_map(model, [(p.dist, p.ref) for p in pairs], crops=opt.crops, crop_size=opt.crop_size,
                            seed=opt.seed, batch_size=opt.batch_size, precision=opt.precision,
                            num_workers=opt.num_workers, maps_dir=opt.save_maps, progress=not opt.quiet)
    elapsed = time.perf_counter() - start
    if opt.output:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["dist", "ref", "score"])
        writer.writerows([str(r.dist), str(r.ref), f"{r.score:.6f}"] for r in results)
        atomic_write_text(opt.output, buf.getvalue())
    if not opt.quiet:
        names = result_names([r.dist for r in results])
        width = max(map(len, names))
        print(f"{'dist':<{width}}  {'ref':<12}  score")
        for name, r in zip(names, results):
            print(f"{name:<{width}}  {r.ref.name:<12}  {r.score:.4f}")
    print(f"scored {len(results)} pair(s) with crops={opt.crops} in {elapsed:.2f}s"
          + (f"; wrote {opt.output}" if opt.output else "")
          + (f"; wrote {len(results)} quality maps to {opt.save_maps}" if opt.save_maps else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
