"""Score image pairs with AHIQ: ``ahiq score --ref REF --dist DIST [--checkpoint FILE] ...`` (or ``python score.py``).

REF and DIST are files or folders (paired by file name); prints a table and optionally writes ``--output`` CSV.
"""
from __future__ import annotations

import time

from ahiq.options.score_options import ScoreOptions
from ahiq.utils.errors import cli_main, note


@cli_main
def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    options = ScoreOptions(prog)
    opt = options.parse(argv)
    from ahiq.data.images import pair_paths
    from ahiq.data.records import Pair, result_names
    from ahiq.engine.session import ScoringSession
    from ahiq.utils.tables import write_csv

    with ScoringSession(options.config(opt)) as session:  # the output locked until the end
        found, problems = pair_paths(opt.ref, opt.dist)
        pairs = session.screen([Pair(d, r) for d, r in found], problems, check_hint=False)
        names = result_names(pairs)
        session.guard(pairs, names)
        note(f"model: {session.describe()}")
        start = time.perf_counter()
        scores = session.score(pairs, names)
        if scores is None:  # another rank writes the results
            return
        elapsed = time.perf_counter() - start
        if opt.output:
            rows = [[p.dist, p.ref, f"{scores[i]:.6f}"] for i, p in enumerate(pairs)]
            write_csv(opt.output, ["dist", "ref", "score"], rows)
            session.finish(opt.output)
        if not opt.quiet and opt.output != "-":
            width = max(map(len, names))
            print(f"{'dist':<{width}}  {'ref':<12}  score")
            for i, (name, p) in enumerate(zip(names, pairs)):
                print(f"{name:<{width}}  {p.ref.name:<12}  {scores[i]:.4f}")
        maps = f"; wrote {len(pairs)} quality map{'s' if len(pairs) > 1 else ''} to {opt.save_maps}" if opt.save_maps else ""
        note(f"scored {len(pairs)} pair(s) with crops={opt.crops} in {elapsed:.2f}s"
             + (f"; wrote {opt.output}" if opt.output else "") + maps)


if __name__ == "__main__":
    main()
