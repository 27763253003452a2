"""utils.io: outputs never land on inputs or climb out of their folder, special files are written through, one
writer per run folder, every file a run reads is registered as an input, written files follow the umask, result
and map names are unique. Each refused run leaves the inputs byte for byte as they were."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ahiq.commands import score
from ahiq.commands import test as test_script
from ahiq.utils.tables import read_csv
from tests.conftest import (NO_HEADS, ROOT, TINY_CLI, fingerprint, random_pair_images, refused, run_main, score_main,
                            train_run)


def test_unique_names_keep_bare_names_where_they_are_unique():
    from ahiq.data.records import result_names
    from ahiq.utils.io import map_file_names as unique_file_names

    assert result_names([Path("/d/Train_Dis/A0001_00_00.bmp"), Path("/d/Train_Dis/A0002_00_00.bmp")]) == \
        ["A0001_00_00.bmp", "A0002_00_00.bmp"]
    assert result_names([Path("/L/jpeg/img1.bmp"), Path("/L/wn/img1.bmp"), Path("/L/wn/img2.bmp")]) == \
        ["jpeg/img1.bmp", "wn/img1.bmp", "wn/img2.bmp"]
    assert unique_file_names(["a.bmp", "b.bmp"], ".png") == ["a.png", "b.png"]
    assert unique_file_names(["a.bmp", "a.png"], ".png") == ["a.bmp.png", "a.png.png"]
    assert unique_file_names(["jpeg/img1.bmp", "wn/img1.bmp"], ".png") == ["jpeg/img1.png", "wn/img1.png"]
    # never out of the maps folder: absolute paths lose their root, .. becomes __
    assert unique_file_names(["/data/x/a.png", "../up/b.png"], ".png") == ["data/x/a.png", "__/up/b.png"]


def test_written_files_follow_the_umask(pairs_folder, data_root, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "scores.csv"
        score_main(["--ref", str(pairs_folder / "ref"), "--dist", str(pairs_folder / "dist"), "--crop_size", "32",
                    "--output", str(out), "--quiet", *TINY_CLI])
        train_run(data_root, tmp_path, "modes", "--n_epoch", "1", "--max_steps", "1")
    finally:
        os.umask(old)
    for path in (out, tmp_path / "modes" / "last.pth", tmp_path / "modes" / "opt.json"):
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_outputs_never_land_on_inputs(pairs, tmp_path, capsys):
    before = fingerprint(pairs)
    ref, dist = pairs / "ref", pairs / "dist"
    common = ["--ref", ref, "--dist", dist, *TINY_CLI, *NO_HEADS]
    refused(capsys, score.main, [*common, "--output", dist / "A0001_00_00.png"], "is the input", "A0001_00_00.png")
    refused(capsys, score.main, [*common, "--save_maps", dist], "--save_maps", "its map", "is the input")
    refused(capsys, score.main, [*common, "--output", ref / "x" / ".." / "A0001.png"], "is the input")
    data = ["--dataset", "csv", "--data_root", pairs, "--split", "all", *TINY_CLI, *NO_HEADS]
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
                                       "--output", tmp_path / "r.txt", "--save_maps", maps, *TINY_CLI, *NO_HEADS], capsys)
    assert proc.returncode == 0, proc.stderr
    written = sorted(str(p.relative_to(maps)) for p in maps.rglob("*.png"))
    assert len(written) == 3 and all(not w.startswith("..") for w in written)
    assert any(w.startswith("__/") for w in written)  # the climbing name, kept inside
    assert (fingerprint(pairs), fingerprint(outside)) == before


@pytest.mark.slow
def test_special_files_are_written_through_never_replaced(pairs, tmp_path, capsys):
    argv = ["--ref", pairs / "ref" / "A0001.png", "--dist", pairs / "dist" / "A0001_00_00.png", *TINY_CLI, *NO_HEADS,
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


def test_file_names_too_long_for_the_temporary_name_fail_before_work(pairs, tmp_path, capsys):
    argv = ["--ref", pairs / "ref", "--dist", pairs / "dist", *TINY_CLI, *NO_HEADS]
    line = refused(capsys, score.main, [*argv, "--output", tmp_path / ("x" * 245 + ".csv")], "longer than")
    assert "RANDOM" not in line and not list(tmp_path.glob("x*"))


def test_two_runs_of_one_folder_the_second_stops_at_once(tmp_path):
    from ahiq.utils.errors import UserError
    from ahiq.utils.io import lock_folder

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nsys.path.insert(0, sys.argv[1])\n"
                               "from ahiq.utils.io import lock_folder\nh = lock_folder(sys.argv[2])\n"
                               "print('held', flush=True)\n"
                               "time.sleep(60)", str(ROOT), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    # at once: a lock that waited would wait for the holder's end and then take the lock instead of refusing
    with pytest.raises(UserError, match=rf"{tmp_path}: another run is writing there \(process {holder.pid}\)"):
        lock_folder(tmp_path)
    holder.kill()  # SIGKILL: the lock dies with the process
    holder.wait()
    lock_folder(tmp_path).close()


@pytest.mark.slow
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
                               "--output", "-", *map(str, TINY_CLI), *NO_HEADS], cwd=ROOT, stdout=out, text=True,
                              stderr=subprocess.PIPE, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    assert lines[:5] == [f"earlier line {k}" for k in range(5)] and lines[5] == "dist,ref,score" and len(lines) == 9
    monkeypatch.chdir(tmp_path)  # test.py with labels to standard output: no labels copy named "-_labels.csv"
    proc = run_main(test_script.main, ["--dataset", "csv", "--data_root", pairs, "--split", "all", "--crops", "center",
                                       "--output", "-", *TINY_CLI, *NO_HEADS], capsys)
    assert proc.returncode == 0 and [r.split(",")[0] for r in proc.stdout.splitlines()[:3]] == [
        "dist/A0001_00_00.png", "dist/A0001_01_00.png", "dist/A0002_00_00.png"], proc.stdout
    assert not list(tmp_path.glob("-*"))
