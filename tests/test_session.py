"""Scoring sessions (engine.session): journals tie results to their files and are read strictly, Ctrl-C is one
line, and results and maps of a whole dataset are named uniquely."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ahiq.commands import score
from ahiq.utils.tables import read_csv
from tests.conftest import NO_HEADS, ROOT, TINY_CLI, fingerprint, random_pair_images, refused, run_main, test_main


def test_live_results_and_maps_are_named_uniquely(tmp_path, monkeypatch, capsys):
    from tests.conftest import shared_path
    from tests.fixtures_standard import build_live

    shared_path("data", "labels", "LIVE")
    root = build_live(tmp_path / "LIVE")
    written = []

    def fake_map(image, score_map, weight_map, path, title="", name=""):  # matplotlib for 779 maps takes minutes
        written.append(name)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(name)

    monkeypatch.setattr("ahiq.engine.session.save_quality_map", fake_map)
    out, maps = tmp_path / "results.txt", tmp_path / "maps"
    test_main(["--dataset", "live", "--data_root", str(root), "--split", "all", "--checkpoint", "none",
                      "--crop_size", "32", "--crops", "center", "--batch_size", "64", "--output", str(out),
                      "--save_maps", str(maps), *TINY_CLI])
    names = [line.split(",")[0] for line in out.read_text().splitlines()]
    assert len(names) == 779 and len(set(names)) == 779 and "jpeg/img1.bmp" in names and "wn/img1.bmp" in names
    labels = (tmp_path / "results_labels.csv").read_text().splitlines()[1:]
    assert [line.split(",")[0] for line in labels] == names
    files = sorted(maps.rglob("*.png"))
    assert len(files) == 779 and sorted(written) == sorted(names)
    assert (maps / "jpeg" / "img1.png").read_text() == "jpeg/img1.bmp"


@pytest.mark.slow
def test_ctrl_c_while_workers_decode_is_one_line(tmp_path):
    many = tmp_path / "many"
    random_pair_images(many, [(f"A{r:04d}_{k:02d}_00.png", f"A{r:04d}.png") for r in range(20) for k in range(3)], 96, 96)
    log, journal = tmp_path / "stderr.txt", tmp_path / "s.csv.journal"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "score.py", "--ref", str(many / "ref"), "--dist", str(many / "dist"),
                                 "--num_workers", "2", "--crops", "random:30", "--batch_size", "1", "--output",
                                 str(tmp_path / "s.csv"), *map(str, TINY_CLI), *NO_HEADS], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "OMP_NUM_THREADS": "1"})
    # scoring under way, the workers decoding: a first reference's pairs journaled (the poll's end: a hang guard)
    for _ in range(6000):
        if proc.poll() is not None or (journal.is_file() and journal.read_text().count("\n") >= 2):
            break
        time.sleep(0.05)
    assert proc.poll() is None, log.read_text()[-2000:]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    text = log.read_text()
    assert proc.returncode == 130 and text.strip().endswith("interrupted") and "Traceback" not in text, text[-2000:]


def _stopped_after(monkeypatch, n: int):
    """Make the next scoring run stop (as Ctrl-C does) after ``n`` pairs are journaled."""
    from ahiq.engine.session import Journal

    real, count = Journal.add, [0]

    def add(self, pair, score):
        real(self, pair, score)
        count[0] += 1
        if count[0] == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(Journal, "add", add)
    return lambda: monkeypatch.setattr(Journal, "add", real)


def test_journals_tie_results_to_their_files_and_are_read_strictly(pairs, tmp_path, capsys, monkeypatch):
    """A resumed run rescores pairs whose files changed (or are other files of the same names), reads journals by
    their exact names only, stops at the first bad line (NaN, a string), refuses what is no journal in one line,
    writes the maps a resume adds, and a second run on one output stops at once naming the first."""
    import cv2
    import numpy as np

    one = ["--batch_size", "1", "--crops", "center", "--quiet", *TINY_CLI, *NO_HEADS]  # A0001's two pairs: one segment
    out = tmp_path / "s.csv"

    def stopped(folder, output, *extra):
        restore = _stopped_after(monkeypatch, 2)
        proc = run_main(score.main, ["--ref", folder / "ref", "--dist", folder / "dist", "--output", output, *one,
                                     *extra], capsys)
        restore()
        assert proc.returncode == 130 and Path(f"{output}.journal").is_file(), proc.stderr

    def scored(folder, output, *extra):
        proc = run_main(score.main, ["--ref", folder / "ref", "--dist", folder / "dist", "--output", output, *one,
                                     *extra], capsys)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    # a file changed after its score was journaled: scored again, and said so
    stopped(pairs, out)
    changed = pairs / "dist" / "A0001_00_00.png"
    cv2.imwrite(str(changed), np.full((32, 32, 3), 200, np.uint8))
    err = scored(pairs, out)
    assert "resume: 1 of 3 pair(s) already scored" in err and "1 scored again: their files changed" in err, err
    scored(pairs, tmp_path / "fresh.csv")
    assert out.read_bytes() == (tmp_path / "fresh.csv").read_bytes() and not Path(f"{out}.journal").exists()

    # other images under the same relative names, run from another folder into the same output: none reused
    other = tmp_path / "other"
    random_pair_images(other, [("A0001_00_00.png", "A0001.png"), ("A0001_01_00.png", "A0001.png"),
                               ("A0002_00_00.png", "A0002.png")], 32, 32, seed=5)
    monkeypatch.chdir(tmp_path / "data")
    stopped(Path("."), out)
    monkeypatch.chdir(other)
    scored(Path("."), out)
    scored(other, tmp_path / "fresh.csv")
    assert [r[2] for r in read_csv(out)] == [r[2] for r in read_csv(tmp_path / "fresh.csv")]
    scored(pairs, tmp_path / "fresh.csv")

    # values read back are checked: NaN, Infinity or a string end what is trusted (those pairs are scored again)
    for bad in ("NaN", "Infinity", '"0.5"'):
        stopped(pairs, out)
        journal = Path(f"{out}.journal")
        lines = journal.read_text().splitlines()
        journal.write_text("\n".join([lines[0], lines[1].rsplit('"score": ', 1)[0] + f'"score": {bad}}}',
                                      *lines[2:]]) + "\n")
        err = scored(pairs, out)
        assert "line 2 is damaged" in err and out.read_bytes() == (tmp_path / "fresh.csv").read_bytes(), err

    # what is no journal is one line naming the file to delete; names are exact (no glob, no prefix)
    before = fingerprint(pairs)
    (tmp_path / "s.csv.journal").mkdir()
    refused(capsys, score.main, ["--ref", pairs / "ref", "--dist", pairs / "dist", "--output", out, *one],
            "s.csv.journal", "delete it to start over")
    (tmp_path / "s.csv.journal").rmdir()
    (tmp_path / "s.csv.journal").write_bytes(b"\xff\xfe{}\n")
    refused(capsys, score.main, ["--ref", pairs / "ref", "--dist", pairs / "dist", "--output", out, *one],
            "s.csv.journal", "first line is damaged", "delete it")
    (tmp_path / "s.csv.journal").write_text('{"journal": 2, "sett')  # killed while writing its header
    scored(pairs, out)
    assert out.read_bytes() == (tmp_path / "fresh.csv").read_bytes() and not (tmp_path / "s.csv.journal").exists()
    glob_out = tmp_path / "g[1].csv"
    keep = {tmp_path / "g1.csv.journal": "a user's file\n", tmp_path / "g[1].csv.journal_notes.txt": "",
            tmp_path / "g[1].csv.journal.csv": "x\n"}
    for path, text in keep.items():
        path.write_text(text)
    scored(pairs, glob_out)
    assert all(path.read_text() == text for path, text in keep.items())
    assert fingerprint(pairs) == before

    # a resume that adds --save_maps writes every map, the journaled pairs' too
    stopped(pairs, out)
    scored(pairs, out, "--save_maps", tmp_path / "maps")
    assert len(list((tmp_path / "maps").glob("*.png"))) == 3

    # a second run on the same output stops at once, naming the process that holds it
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nsys.path.insert(0, sys.argv[1])\n"
                               "from ahiq.utils.io import lock_file\nh = lock_file(sys.argv[2], 'busy', 'wait')\n"
                               "print('held', flush=True)\ntime.sleep(60)", str(ROOT), f"{out}.lock"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused(capsys, score.main, ["--ref", pairs / "ref", "--dist", pairs / "dist", "--output", out, *one],
                f"--output {out}: another run is writing it (process {holder.pid})")
    finally:
        holder.kill()
        holder.wait()
    scored(pairs, out)
    assert not (tmp_path / "s.csv.lock").exists()


def test_ctrl_c_keeps_background_threads_quiet(capsys):
    """A background thread that reports a failure through sys.excepthook while a run is torn down after Ctrl-C (as
    multiprocessing's handle sharer does when DataLoader workers go) prints nothing: the user reads one line."""
    import threading

    from ahiq.utils.errors import cli_main

    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("this test runner handles SIGINT itself")
    hook = sys.excepthook

    @cli_main
    def run():
        os.kill(os.getpid(), signal.SIGINT)  # delivered at once, to this (the main) thread
        time.sleep(5)  # a hang guard: the interrupt ends the sleep

    def failing_thread():
        try:
            raise ConnectionResetError("a worker went away")
        except ConnectionResetError:
            sys.excepthook(*sys.exc_info())

    with pytest.raises(SystemExit) as stop:
        run()
    thread = threading.Thread(target=failing_thread)
    thread.start()
    thread.join()
    err = capsys.readouterr().err
    sys.excepthook = hook
    assert stop.value.code == 130 and err.strip() == "interrupted", err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
