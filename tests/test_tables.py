"""utils.tables: result tables round-trip names with commas, quotes and line breaks through the csv module."""
from __future__ import annotations

from pathlib import Path

from ahiq.commands import score
from ahiq.commands import test as test_script
from ahiq.utils.tables import read_csv
from tests.conftest import NO_HEADS, TINY_CLI, random_pair_images, refused, run_main


def test_tables_round_trip_names_with_commas_quotes_and_line_breaks(tmp_path, capsys):
    names = ["a,b.png", 'q"uote.png', "cr\rx.png", "lf\ny.png", "ümlaut é.png"]
    random_pair_images(tmp_path, [(n, "ref.png") for n in names], 32, 32)
    rows = [["dist", "ref", "score"], *([f"dist/{n}", "ref/ref.png", str(k)] for k, n in enumerate(names))]
    import csv

    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    proc = run_main(test_script.main, ["--dataset", "csv", "--data_root", tmp_path, "--split", "all", "--crops",
                                       "center", "--output", tmp_path / "r.txt", *TINY_CLI, *NO_HEADS], capsys)
    assert proc.returncode == 0, proc.stderr
    assert [r[0] for r in read_csv(tmp_path / "r.txt")] == [f"dist/{n}" for n in names]
    assert [r[0] for r in read_csv(tmp_path / "r_labels.csv")[1:]] == [f"dist/{n}" for n in names]
    scored = run_main(score.main, ["--ref", tmp_path / "ref" / "ref.png", "--dist", tmp_path / "dist", "--output",
                                   tmp_path / "s.csv", "--quiet", *TINY_CLI, *NO_HEADS], capsys)
    assert scored.returncode == 0, scored.stderr
    assert sorted(Path(r[0]).name for r in read_csv(tmp_path / "s.csv")[1:]) == sorted(names)
    refused(capsys, test_script.main, ["--dataset", "csv", "--data_root", tmp_path, "--split", "all", "--output",
                                       tmp_path / "n.txt", "--ntire_zip", tmp_path / "n.zip", *TINY_CLI, *NO_HEADS],
            "--ntire_zip", "comma, quote or line break")
