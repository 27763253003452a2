"""Score every pair of a dataset split or a folder pair with a trained AHIQ checkpoint (``python test.py --help``;
``sh test.sh`` for the NTIRE 2022 PIPAL folders).

Writes ``name,score`` lines to ``--output``; with labels prints ``test: SRCC=... PLCC=... ... main=...``.
"""
from __future__ import annotations

from ahiq.commands import check_data_and_exit
from ahiq.options.test_options import TestOptions
from ahiq.utils.errors import cli_main


@cli_main
def main(argv: list[str] | None = None, prog: str | None = None) -> dict | None:
    options = TestOptions(prog)
    opt = options.parse(argv)
    cfg = options.config(opt)
    from ahiq.engine.evaluation import collect_pairs, run_test
    from ahiq.engine.session import ScoringSession

    with ScoringSession(cfg.score, outputs={"--ntire_zip ": cfg.ntire_zip, "--plot ": cfg.plot}) as session:
        pairs = collect_pairs(cfg, session.ctx)
        if opt.check_data:
            check_data_and_exit({"test": pairs}, session.crop_size)
        return run_test(cfg, session, pairs, print)  # notes: why a figure is missing, the fitted mapping's form


if __name__ == "__main__":
    main()
