"""Nothing a user owns is overwritten and nothing wrong passes silently: outputs never land on inputs or climb
out of their folder, special files are written through, one writer per run folder, tables round-trip through the
csv module, non-finite weights and scores stop, references are files, every option is checked when read, folder
scans say what they leave out. Each refused run leaves the inputs byte for byte as they were."""
from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ahiq.commands import score
from ahiq.commands import test as test_script
from ahiq.commands import train
from tests.conftest import ROOT, TINY_ARGS, random_pair_images, run_main, tiny_model
from ahiq.utils.tables import read_csv

TINY = [*TINY_ARGS, "--pretrained_backbones", "false", "--device", "cpu", "--crop_size", "32"]
NO_HEADS = ["--checkpoint", "none"]


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (links by target) with the SHA-256 of its bytes: what no refused run may change."""
    return {str(p.relative_to(folder)): ("link:" + os.readlink(p)) if p.is_symlink() else
            hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink()}


def refused(capsys, main, argv, *expected) -> str:
    proc = run_main(main, argv, capsys)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) >= 1 and "Traceback" not in proc.stderr, proc.stderr
    line = err[-1]
    assert line.startswith("error: ") and all(e in line for e in expected), line
    return line


@pytest.fixture
def pairs(tmp_path):
    """PNG pairs (so that maps could land on them) and a labels.csv over them, in ``tmp_path / data``."""
    names = [("A0001_00_00.png", "A0001.png"), ("A0001_01_00.png", "A0001.png"), ("A0002_00_00.png", "A0002.png")]
    root = tmp_path / "data"
    random_pair_images(root, names, 32, 32)
    rows = [f"dist/{d},ref/{r},{3.0 + k}" for k, (d, r) in enumerate(names)]
    (root / "labels.csv").write_text("dist,ref,score\n" + "\n".join(rows) + "\n")
    return root


def test_outputs_never_land_on_inputs(pairs, tmp_path, capsys):
    before = fingerprint(pairs)
    ref, dist = pairs / "ref", pairs / "dist"
    common = ["--ref", ref, "--dist", dist, *TINY, *NO_HEADS]
    refused(capsys, score.main, [*common, "--output", dist / "A0001_00_00.png"], "is the input", "A0001_00_00.png")
    refused(capsys, score.main, [*common, "--save_maps", dist], "--save_maps", "its map", "is the input")
    refused(capsys, score.main, [*common, "--output", ref / "x" / ".." / "A0001.png"], "is the input")
    data = ["--dataset", "csv", "--data_root", pairs, "--split", "all", *TINY, *NO_HEADS]
    refused(capsys, test_script.main, [*data, "--output", pairs / "labels.csv"], "labels.csv", "is the input")
    refused(capsys, test_script.main, [*data, "--output", pairs / "r.txt", "--plot", pairs / "r.txt"], "is --output")
    assert fingerprint(pairs) == before  # not a byte changed by any refused run


def test_map_names_stay_inside_the_maps_folder(pairs, tmp_path, capsys):
    """labels.csv naming images by absolute path and with .. : every map lands inside --save_maps."""
    outside = tmp_path / "outside"  # beside the data folder
    random_pair_images(outside, [("B0001_00_00.png", "B0001.png")], 32, 32)
    (pairs / "labels.csv").write_text(
        "dist,ref,score\n"
        f"{pairs / 'dist' / 'A0001_00_00.png'},ref/A0001.png,3\n"  # absolute
        f"../{outside.name}/dist/B0001_00_00.png,../{outside.name}/ref/B0001.png,2\n"  # climbs out of DIR
        "dist/A0002_00_00.png,ref/A0002.png,4\n")
    before = fingerprint(pairs), fingerprint(outside)
    maps = tmp_path / "maps"
    proc = run_main(test_script.main, ["--dataset", "csv", "--data_root", pairs, "--split", "all", "--crops", "center",
                                       "--output", tmp_path / "r.txt", "--save_maps", maps, *TINY, *NO_HEADS], capsys)
    assert proc.returncode == 0, proc.stderr
    written = sorted(str(p.relative_to(maps)) for p in maps.rglob("*.png"))
    assert len(written) == 3 and all(not w.startswith("..") for w in written)
    assert any(w.startswith("__/") for w in written)  # the climbing name, kept inside
    assert (fingerprint(pairs), fingerprint(outside)) == before


def test_special_files_are_written_through_never_replaced(pairs, tmp_path, capsys):
    argv = ["--ref", pairs / "ref" / "A0001.png", "--dist", pairs / "dist" / "A0001_00_00.png", *TINY, *NO_HEADS,
            "--quiet"]
    target = tmp_path / "real.csv"
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert run_main(score.main, [*argv, "--output", link], capsys).returncode == 0
    assert link.is_symlink() and read_csv(target)[0] == ["dist", "ref", "score"]  # the link stays, its target written
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    assert run_main(score.main, [*argv, "--output", fifo], capsys).returncode == 0
    assert reader.communicate(timeout=60)[0].startswith("dist,ref,score\n") and fifo.exists() and not fifo.is_file()
    proc = subprocess.run([sys.executable, "score.py", *map(str, argv), "--output", "-"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and proc.stdout.startswith("dist,ref,score\n") and len(proc.stdout.splitlines()) == 2


def test_tables_round_trip_names_with_commas_quotes_and_line_breaks(tmp_path, capsys):
    names = ["a,b.png", 'q"uote.png', "cr\rx.png", "lf\ny.png", "ümlaut é.png"]
    random_pair_images(tmp_path, [(n, "ref.png") for n in names], 32, 32)
    rows = [["dist", "ref", "score"], *([f"dist/{n}", "ref/ref.png", str(k)] for k, n in enumerate(names))]
    import csv

    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    proc = run_main(test_script.main, ["--dataset", "csv", "--data_root", tmp_path, "--split", "all", "--crops",
                                       "center", "--output", tmp_path / "r.txt", *TINY, *NO_HEADS], capsys)
    assert proc.returncode == 0, proc.stderr
    assert [r[0] for r in read_csv(tmp_path / "r.txt")] == [f"dist/{n}" for n in names]
    assert [r[0] for r in read_csv(tmp_path / "r_labels.csv")[1:]] == [f"dist/{n}" for n in names]
    scored = run_main(score.main, ["--ref", tmp_path / "ref" / "ref.png", "--dist", tmp_path / "dist", "--output",
                                   tmp_path / "s.csv", "--quiet", *TINY, *NO_HEADS], capsys)
    assert scored.returncode == 0, scored.stderr
    assert sorted(Path(r[0]).name for r in read_csv(tmp_path / "s.csv")[1:]) == sorted(names)
    refused(capsys, test_script.main, ["--dataset", "csv", "--data_root", tmp_path, "--split", "all", "--output",
                                       tmp_path / "n.txt", "--ntire_zip", tmp_path / "n.zip", *TINY, *NO_HEADS],
            "--ntire_zip", "comma, quote or line break")


def test_non_finite_weights_and_options_stop(pairs, tmp_path, capsys):
    from ahiq.models.checkpoint import save_checkpoint

    model = tiny_model(2)
    with torch.no_grad():
        model.regressor.conv[0].weight[0, 0] = math.nan
    save_checkpoint(tmp_path / "nan.pth", model)
    refused(capsys, score.main, ["--ref", pairs / "ref", "--dist", pairs / "dist", "--checkpoint", tmp_path / "nan.pth",
                                 *TINY], "regressor.conv.0.weight holds NaN or Inf")
    for option, value in (("--eta_min", "nan"), ("--grad_clip", "-1"), ("--time_limit", "inf"), ("--max_steps", "-3"),
                          ("--weight_decay", "-1"), ("--seed", "-1"), ("--seed", str(2**32)), ("--batch_size", "10**9")):
        refused(capsys, train.main, [option, value], option)


def test_weights_that_turn_non_finite_are_never_saved(tmp_path, capsys, monkeypatch):
    from ahiq.engine import trainer

    real = trainer.step_loss

    def poisoned(model, *args, **kwargs):
        loss = real(model, *args, **kwargs)
        with torch.no_grad():
            model.regressor.conv[0].bias.fill_(math.inf)
        return loss.new_zeros(())  # a finite loss: only the weights tell

    monkeypatch.setattr(trainer, "step_loss", poisoned)
    argv = ["--dataset", "synthetic", "--data_root", tmp_path / "data", "--synthetic_refs", "4", "--synthetic_size",
            "32", "--batch_size", "4", "--n_epoch", "1", "--max_steps", "1", "--val_crops", "center", "--progress",
            "false", "--checkpoints_dir", tmp_path, "--name", "diverged", *TINY]
    refused(capsys, train.main, argv, "training diverged", "regressor.conv.0.bias holds NaN or Inf", "nothing saved")
    assert not list((tmp_path / "diverged").glob("*.pth"))


def test_a_reference_named_three_ways_is_one_reference(tmp_path):
    from ahiq.data.datasets import DataConfig
    from ahiq.data.splits import prepare_splits

    names = [(f"A000{r}_0{k}_00.png", f"A000{r}.png") for r in range(1, 7) for k in range(2)]
    random_pair_images(tmp_path, names, 32, 32)
    spell = [lambda r: f"ref/{r}", lambda r: f"ref/../ref/{r}", lambda r: str(tmp_path / "ref" / r)]
    lines = [f"dist/{d},{spell[k % 3](r)},{k}" for k, (d, r) in enumerate(names)]
    (tmp_path / "labels.csv").write_text("dist,ref,score\n" + "\n".join(lines) + "\n")
    parts, _ = prepare_splits(DataConfig("csv", str(tmp_path), split_ratio="4:1:1"), None)
    refs = {part: {p.ref_id for p in pairs} for part, pairs in parts.items()}
    assert sum(map(len, refs.values())) == 6 and all(r.startswith("ref/A000") for v in refs.values() for r in v)
    assert not (refs["train"] & refs["val"]) and not (refs["train"] & refs["test"])
    (tmp_path / "labels.csv").write_text("dist,ref,score\ndist/A0001_00_00.png,ref/A0001.png,1\n"
                                         "dist/../dist/A0001_00_00.png,ref/A0001.png,2\n")
    from ahiq.data.csv_labels import load_csv_dataset
    from ahiq.utils.errors import UserError

    with pytest.raises(UserError, match=r"labels.csv:3: dist/../dist/A0001_00_00.png is listed again"):
        load_csv_dataset(tmp_path)


@pytest.mark.parametrize("content, needle", [
    ({"n_epoch": None}, "n_epoch null"), ({"batch_size": None}, "batch_size null"), ({"name": None}, "name null"),
    ({"learning_rate": None}, "learning_rate null"), ({"seed": None}, "seed null"), ({"crop_size": 100}, "multiple of 32"),
    ({"vit_kwargs": {"depth": "deep"}}, "timm cannot build it"), ({"seed": 2**40}, "--seed"),
    ({"eta_min": "nan"}, "--eta_min"), ({"max_steps": -3}, "--max_steps"),
])
def test_option_files_are_checked_like_flags(tmp_path, capsys, content, needle):
    (tmp_path / "c.json").write_text(json.dumps(content))
    refused(capsys, train.main, ["--config", tmp_path / "c.json"], needle)


@pytest.mark.parametrize("crops", ["random:²", "random:3000000000", "grid:1000003", "grid:0", "five:2"])
def test_crop_protocols_are_checked_when_read(crops, capsys):
    refused(capsys, score.main, ["--ref", "r.png", "--dist", "d.png", "--crops", crops], "--crops")


def test_abbreviations_are_refused_not_half_applied(capsys):
    refused(capsys, score.main, ["--ref", "r.png", "--dist", "d.png", "--crop_s", "32"], "unrecognized", "--crop_s")


def test_file_names_too_long_for_the_temporary_name_fail_before_work(pairs, tmp_path, capsys):
    argv = ["--ref", pairs / "ref", "--dist", pairs / "dist", *TINY, *NO_HEADS]
    line = refused(capsys, score.main, [*argv, "--output", tmp_path / ("x" * 245 + ".csv")], "longer than")
    assert "RANDOM" not in line and not list(tmp_path.glob("x*"))


def test_folder_scans_name_what_they_leave_out(pairs, tmp_path, capsys):
    dist = pairs / "dist"
    (dist / "broken.png").symlink_to(dist / "nowhere.png")
    (dist / "loop.png").symlink_to(dist / "loop.png")
    (dist / "anim.gif").write_bytes(b"GIF89a")
    proc = run_main(score.main, ["--ref", pairs / "ref", "--dist", dist, "--quiet", *TINY, *NO_HEADS], capsys)
    assert proc.returncode == 0, proc.stderr
    note = next(line for line in proc.stderr.splitlines() if line.startswith("note: left out 3 entries"))
    assert "broken.png (broken or looping link)" in note and "loop.png" in note and "anim.gif (not an image" in note


def test_label_lines_split_at_cr_and_lf_only(tmp_path):
    from ahiq.data.labels import label_lines

    (tmp_path / "l.txt").write_text("a\u2028b.bmp,1\r\nc.bmp,2\rd.bmp,3\n", newline="")
    assert label_lines(tmp_path / "l.txt") == ["a\u2028b.bmp,1", "c.bmp,2", "d.bmp,3"]


def test_two_runs_of_one_folder_the_second_stops_at_once(tmp_path):
    from ahiq.utils.errors import UserError
    from ahiq.utils.io import lock_folder

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nsys.path.insert(0, sys.argv[1])\n"
                               "from ahiq.utils.io import lock_folder\nh = lock_folder(sys.argv[2])\n"
                               "print('held', flush=True)\n"
                               "time.sleep(60)", str(ROOT), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    start = time.monotonic()
    with pytest.raises(UserError, match=rf"{tmp_path}: another run is writing there \(process {holder.pid}\)"):
        lock_folder(tmp_path)
    assert time.monotonic() - start < 5
    holder.kill()  # SIGKILL: the lock dies with the process
    holder.wait()
    lock_folder(tmp_path).close()


def test_ctrl_c_while_workers_decode_is_one_line(tmp_path):
    many = tmp_path / "many"
    random_pair_images(many, [(f"A0001_{k:02d}_00.png", "A0001.png") for k in range(60)], 96, 96)
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "score.py", "--ref", str(many / "ref"), "--dist", str(many / "dist"),
                                 "--num_workers", "2", "--crops", "random:30", "--batch_size", "1", *map(str, TINY),
                                 *NO_HEADS], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and "model:" not in log.read_text():
        time.sleep(0.1)
    time.sleep(2)  # scoring, the workers decoding
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

    one = ["--batch_size", "1", "--crops", "center", "--quiet", *TINY, *NO_HEADS]  # A0001's two pairs: one segment
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


def test_every_file_a_run_reads_is_an_input_and_standard_output_is_written_as_it_is(pairs, tmp_path, capsys,
                                                                                    authors_files, monkeypatch):
    """Reading functions register what they open and every write is checked against that register (a new script
    cannot forget an input); ``--output -`` appends to what standard output is redirected to."""
    from ahiq.commands import export
    from ahiq.data.images import read_image
    from ahiq.utils.errors import cli_main
    from ahiq.utils.io import atomic_write_text, load_torch_file

    from ahiq.models.checkpoint import save_checkpoint

    folder, model = authors_files
    save_checkpoint(tmp_path / "ours.pth", model)  # records the two weight files as its backbones
    before = fingerprint(folder)
    for weights in ("--vit_weights", "--cnn_weights"):
        target = folder / ("vit.safetensors" if weights == "--vit_weights" else "cnn.pth")
        refused(capsys, export.main, ["--checkpoint", tmp_path / "ours.pth", "--to", "onnx", "--output", target,
                                      weights, target, "--check", "false"], "--output", "is the input", target.name)
    assert fingerprint(folder) == before

    @cli_main
    def new_script(argv):  # reads an image and a weight file, then writes where it read, as a careless script would
        read_image(argv[0])
        load_torch_file(argv[1])
        atomic_write_text(argv[2], "overwritten")

    image, weights = pairs / "dist" / "A0001_00_00.png", folder / "cnn.pth"
    data = fingerprint(pairs)
    for target in (image, weights, pairs / "dist" / ".." / "dist" / "A0001_00_00.png"):
        refused(capsys, new_script, [image, weights, target], "is the input", "this run read")
    assert fingerprint(pairs) == data and fingerprint(folder) == before
    assert run_main(new_script, [image, weights, tmp_path / "elsewhere.txt"], capsys).returncode == 0
    atomic_write_text(tmp_path / "elsewhere.txt", "outside a run: nothing registered")

    log = tmp_path / "log.txt"
    log.write_text("".join(f"earlier line {k}\n" for k in range(5)))
    with open(log, "a") as out:
        proc = subprocess.run([sys.executable, "score.py", "--ref", str(pairs / "ref"), "--dist", str(pairs / "dist"),
                               "--output", "-", *map(str, TINY), *NO_HEADS], cwd=ROOT, stdout=out, text=True,
                              stderr=subprocess.PIPE, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    assert lines[:5] == [f"earlier line {k}" for k in range(5)] and lines[5] == "dist,ref,score" and len(lines) == 9
    monkeypatch.chdir(tmp_path)  # test.py with labels to standard output: no labels copy named "-_labels.csv"
    proc = run_main(test_script.main, ["--dataset", "csv", "--data_root", pairs, "--split", "all", "--crops", "center",
                                       "--output", "-", *TINY, *NO_HEADS], capsys)
    assert proc.returncode == 0 and [r.split(",")[0] for r in proc.stdout.splitlines()[:3]] == [
        "dist/A0001_00_00.png", "dist/A0001_01_00.png", "dist/A0002_00_00.png"], proc.stdout
    assert not list(tmp_path.glob("-*"))


def test_a_run_folder_is_never_replaced_and_resume_trains_what_the_run_was(tmp_path, capsys):
    """A new run with an existing run's name is refused (its files byte for byte as they were) unless --overwrite,
    which replaces it whole; --resume refuses options that no longer match what last.pth was trained with."""
    argv = ["--dataset", "synthetic", "--data_root", tmp_path / "data", "--synthetic_refs", "4", "--synthetic_size",
            "32", "--batch_size", "4", "--n_epoch", "1", "--max_steps", "1", "--val_crops", "center", "--progress",
            "false", "--checkpoints_dir", tmp_path, "--name", "run", *TINY]
    assert run_main(train.main, argv, capsys).returncode == 0
    run = tmp_path / "run"

    def files() -> dict[str, str]:
        return {k: v for k, v in fingerprint(run).items() if k != ".lock" and not k.startswith("tb/")}

    before = files()
    refused(capsys, train.main, [*argv, "--seed", "7"], f"{run}: holds a run (last.pth, best.pth, opt.json)",
            "--resume", "--name NEW", "--overwrite")
    assert files() == before
    refused(capsys, train.main, [*argv, "--overwrite", "--resume"], "give one")
    refused(capsys, train.main, [*argv, "--overwrite", "--split_file", run / "split.json"], "split.json",
            "is the input")  # checked before --overwrite removes anything
    assert files() == before
    proc = run_main(train.main, [*argv, "--seed", "7", "--overwrite"], capsys)
    assert proc.returncode == 0, proc.stderr
    log = (run / "train.log").read_text()
    assert "replaced the run that was here (--overwrite)" in log and log.count("epoch 1/1") == 1, log
    assert json.loads((run / "opt.json").read_text())["run"]["seed"] == 7 and len(list((run / "tb").iterdir())) == 1

    options = json.loads((run / "opt.json").read_text())
    options["data"]["synthetic_size"] = 64  # a hand-edited opt.json: other data under the run's name
    (run / "opt.json").write_text(json.dumps(options))
    before = files()
    resume = ["--checkpoints_dir", tmp_path, "--name", "run", "--resume", "--n_epoch", "2", "--progress", "false"]
    refused(capsys, train.main, resume, "last.pth: was trained with data.synthetic_size 32", "say 64",
            "--allow_changes")
    assert files() == before


def test_checkpoint_metadata_is_typed_and_checked_before_anything_is_built(pairs, tmp_path, capsys, monkeypatch):
    """Every malformed value a checkpoint records is one line, and a checkpoint whose architecture does not take its
    tensors stops before any network is built (on the meta device)."""
    from ahiq.models import checkpoint
    from ahiq.models.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "good.pth", tiny_model(4), {"train": {"crop_size": 32}, "label_range": [1.0, 5.0],
                                                           "score_norm": {"kind": "minmax", "lo": 1.0, "hi": 5.0}})
    good = torch.load(tmp_path / "good.pth", weights_only=True)

    def variant(change) -> Path:
        ckpt = json.loads(json.dumps(good, default=lambda t: None))  # a deep copy of everything but the tensors
        for key in ("deform_net_model_state_dict", "regressor_model_state_dict"):
            ckpt[key] = dict(good[key])
        change(ckpt)
        path = tmp_path / "variant.pth"
        torch.save(ckpt, path)
        return path

    def never(*args, **kwargs):
        raise AssertionError("a network was built")

    monkeypatch.setattr(checkpoint, "build_ahiq", never)
    cases = [
        (lambda c: c["ahiq"]["score_norm"].update(lo=math.nan), "score_norm"),
        (lambda c: c["ahiq"]["score_norm"].update(hi=1.0), "finite lo < hi"),
        (lambda c: c["ahiq"].update(score_norm="minmax"), "score_norm"),
        (lambda c: c["ahiq"].update(label_range=["1", "5"]), "label_range"),
        (lambda c: c["ahiq"].update(label_range=[5.0, math.inf]), "label_range"),
        (lambda c: c["ahiq"].update(split=["train"]), "records split"),
        (lambda c: c.update(ahiq=3), "'ahiq' metadata is a int"),
        (lambda c: c["ahiq"]["backbones"]["vit"].update(seed="abc"), "backbones"),
        (lambda c: c["regressor_model_state_dict"].update({"conv.0.weight": "abc"}), "regressor.conv.0.weight holds a str"),
        (lambda c: c["ahiq"]["model_config"]["vit_kwargs"].update(embed_dim=64), "tensors do not fit"),
    ]
    before = fingerprint(pairs)
    for change, needle in cases:
        path = variant(change)
        refused(capsys, score.main, ["--ref", pairs / "ref", "--dist", pairs / "dist", "--checkpoint", path,
                                     "--device", "cpu"], str(path), needle)
    refused(capsys, test_script.main, ["--ref_dir", pairs / "ref", "--dist_dir", pairs / "dist", "--checkpoint",
                                       variant(cases[0][0]), "--device", "cpu", "--output", tmp_path / "r.txt"],
            "score_norm")
    assert fingerprint(pairs) == before and not (tmp_path / "r.txt").exists()
