"""Scoring runs: torchrun over two CPU processes writes the single process's bytes, a rank's failure stops both,
a SIGKILLed run resumes to the same CSV, a resume with other settings is refused."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ahiq.commands import score
from tests.conftest import ROOT, TINY_ARGS, random_pair_images, run_main, tiny_model

# Four references with 5, 1, 3 and 2 distorted images: shards by reference cannot split them evenly.
NAMES = [(f"A000{r}_0{k}_00.bmp", f"A000{r}.bmp") for r, n in ((1, 5), (2, 1), (3, 3), (4, 2)) for k in range(n)]
ENV = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The pairs (32x48) and a checkpoint of ours with random backbones (so every process rebuilds the same)."""
    from ahiq.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("runs")
    random_pair_images(root, NAMES, 32, 48)
    save_checkpoint(root / "tiny.pth", tiny_model(3), {"train": {"crop_size": 32}})
    return root


def _argv(folder, output, *extra):
    return ["--ref", folder / "ref", "--dist", folder / "dist", "--checkpoint", folder / "tiny.pth", "--crops", "five",
            "--batch_size", "4", "--device", "cpu", "--quiet", "--output", output, *TINY_ARGS, *extra]


def _torchrun(script, *argv, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           *map(str, argv)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.mark.slow
def test_two_processes_write_the_single_process_bytes(folder, tmp_path, capsys):
    from ahiq.commands import test as test_script

    common = ["--ref_dir", folder / "ref", "--dist_dir", folder / "dist", "--checkpoint", folder / "tiny.pth",
              "--crops", "random:3", "--batch_size", "5", "--device", "cpu", *TINY_ARGS]
    assert run_main(score.main, _argv(folder, tmp_path / "single.csv"), capsys).returncode == 0
    assert run_main(test_script.main, [*common, "--output", tmp_path / "single.txt"], capsys).returncode == 0
    # one torchrun for both scripts: score.py, then test.py, in the same two processes
    script = tmp_path / "both.py"
    script.write_text("import json, sys\nfrom ahiq.commands import score, test\nfirst, second = json.loads(sys.argv[1])\n"
                      "score.main(first)\ntest.main(second)\n")
    argvs = [list(map(str, _argv(folder, tmp_path / "two.csv", "--save_maps", tmp_path / "maps"))),
             list(map(str, [*common, "--output", tmp_path / "two.txt"]))]
    proc = _torchrun(script, json.dumps(argvs))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "single.csv").read_bytes()
    assert (tmp_path / "two.txt").read_bytes() == (tmp_path / "single.txt").read_bytes()
    assert len((tmp_path / "two.txt").read_text().splitlines()) == len(NAMES)
    assert len(list((tmp_path / "maps").glob("*.png"))) == len(NAMES)  # each by the rank that scored it
    assert not list(tmp_path.glob("*.journal*"))  # done: the journals are gone


@pytest.mark.slow
def test_a_rank_that_fails_stops_both_with_one_line(folder, tmp_path):
    # rank 1 meets an image it cannot decode after the screening passed (found late)
    script = tmp_path / "late_failure.py"
    script.write_text(
        "import os, sys\nfrom ahiq.commands import score\nfrom ahiq.data.screening import DecodedImages\n"
        "from ahiq.utils.errors import UserError\n"
        "if os.environ['RANK'] == '1':\n"
        "    def fail(self, path):\n"
        "        raise UserError(f'{path}: cannot decode image; is it a valid image file?')\n"
        "    DecodedImages.take = fail\n"
        "score.main(sys.argv[1:])\n")
    proc = _torchrun(script, *_argv(folder, tmp_path / "late.csv"), timeout=180)  # the timeout: a hang guard
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "cannot decode image" in errors[0], proc.stderr[-3000:]
    assert not (tmp_path / "late.csv").exists()


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_csv_and_other_settings_are_refused(folder, tmp_path, capsys):
    slow = ["--batch_size", "1", "--crops", "random:40"]  # 440 forward passes: time to stop it part-way
    whole = run_main(score.main, _argv(folder, tmp_path / "whole.csv", *slow), capsys)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "killed.csv"
    journal = tmp_path / "killed.csv.journal"
    argv = [sys.executable, "score.py", *map(str, _argv(folder, out, *slow))]
    proc = subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (not journal.is_file() or journal.read_text().count("\n") < 4):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lines = journal.read_text().count("\n")
    assert 4 <= lines <= len(NAMES) and not out.exists()  # killed part-way: some pairs scored, no CSV yet
    refused = run_main(score.main, _argv(folder, out, *slow[:2], "--crops", "random:39"), capsys)
    assert refused.returncode == 2 and "(crops)" in refused.stderr and "other settings" in refused.stderr
    resumed = run_main(score.main, _argv(folder, out, *slow), capsys)
    assert resumed.returncode == 0 and "already scored" in resumed.stderr, resumed.stderr
    assert out.read_bytes() == (tmp_path / "whole.csv").read_bytes() and not journal.exists()
