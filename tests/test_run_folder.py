"""Run folders (engine.run_folder, engine.trainer): exact resume after SIGKILL or a time limit, temporary files of
interrupted writes removed, a full disk or a damaged last.pth as one line with nothing previous lost, a run folder
never replaced without --overwrite, and weights that turn non-finite never saved."""
from __future__ import annotations

import json
import math
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ahiq.commands import train
from ahiq.models.checkpoint import read_checkpoint
from tests.conftest import ROOT, TINY_CLI, TRAIN, fails, fingerprint, refused, run_main, train_run, unwritable_dir


def _same_training_state(a: Path, b: Path) -> None:
    """Weights, optimiser moments, scheduler and epoch of two ``last.pth`` files are bit-identical."""
    ca, cb = (torch.load(p, weights_only=True) for p in (a, b))
    for key in ("deform_net_model_state_dict", "regressor_model_state_dict"):
        assert ca[key].keys() == cb[key].keys()
        for name, tensor in ca[key].items():
            assert torch.equal(tensor, cb[key][name]), name
    for sa, sb in zip(ca["optimizer_state_dict"]["state"].values(), cb["optimizer_state_dict"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    assert ca["scheduler_state_dict"] == cb["scheduler_state_dict"]
    assert ca["epoch"] == cb["epoch"] and ca["loss"] == cb["loss"] and ca["best"] == cb["best"]
    assert ca["position"] is None and cb["position"] is None


def test_time_limit_inside_an_epoch_then_resume_is_bit_identical(data_root, tmp_path, monkeypatch, capsys):
    from ahiq.engine.trainer import Trainer

    train_run(data_root, tmp_path, "whole", "--n_epoch", "2", "--max_steps", "4")
    calls = {"n": 0}
    real = Trainer.out_of_time

    def stop_at_step_2_of_epoch_1(self, ahead=0.0):  # the time limit "runs out" before the 3rd step of epoch 1
        calls["n"] += 1
        return calls["n"] == 3 and ahead == 0.0

    monkeypatch.setattr(Trainer, "out_of_time", stop_at_step_2_of_epoch_1)
    train_run(data_root, tmp_path, "limited", "--n_epoch", "2", "--max_steps", "4", "--time_limit", "60")
    out = capsys.readouterr().out
    assert "time limit of 60s reached inside epoch 1, after step 2 of 4" in out
    saved = torch.load(tmp_path / "limited" / "last.pth", weights_only=True)
    assert saved["position"]["step"] == 2 and saved["epoch"] == -1 and saved["scheduler_state_dict"]["last_epoch"] == 2
    monkeypatch.setattr(Trainer, "out_of_time", real)
    train_run(data_root, tmp_path, "limited", "--n_epoch", "2", "--max_steps", "4", "--resume")
    assert "inside epoch 1, after step 2" in capsys.readouterr().out
    _same_training_state(tmp_path / "whole" / "last.pth", tmp_path / "limited" / "last.pth")


def test_time_limit_after_an_epoch_validates_only_what_val_freq_says(data_root, tmp_path, monkeypatch, capsys):
    """A stop between epochs does not add a validation that --val_freq skips: the resumed run ends with the
    same best.pth as an uninterrupted one (and validates the same epochs)."""
    from ahiq.engine.trainer import Trainer

    common = ["--n_epoch", "4", "--max_steps", "2", "--val_freq", "2"]
    train_run(data_root, tmp_path, "whole", *common)
    capsys.readouterr()
    real = Trainer.out_of_time
    monkeypatch.setattr(Trainer, "out_of_time", lambda self, ahead=0.0: ahead > 0)  # stop after epoch 1
    train_run(data_root, tmp_path, "limited", *common, "--time_limit", "60")
    out = capsys.readouterr().out
    assert "time limit of 60s reached after epoch 1" in out and " val " not in out
    assert not (tmp_path / "limited" / "best.pth").exists()
    monkeypatch.setattr(Trainer, "out_of_time", real)
    train_run(data_root, tmp_path, "limited", *common, "--resume")
    _same_training_state(tmp_path / "whole" / "last.pth", tmp_path / "limited" / "last.pth")
    whole, limited = (torch.load(tmp_path / run / "best.pth", weights_only=True) for run in ("whole", "limited"))
    assert whole["epoch"] == limited["epoch"] and whole["metrics"] == limited["metrics"]
    logs = [(tmp_path / run / "train.log").read_text() for run in ("whole", "limited")]
    assert [line.split()[2] for line in logs[0].splitlines() if " val " in line and "epoch" in line] == \
        [line.split()[2] for line in logs[1].splitlines() if " val " in line and "epoch" in line]


def _progress(run: Path) -> int:
    log = run / "train.log"
    return log.read_text().count(" loss=") if log.is_file() else 0


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bit_identical(data_root, tmp_path):
    """Two SIGKILLs of a short run, one as soon as a checkpoint write is seen (if one is), one at a random moment of
    the resumed run, a resume after each; the end equals an uninterrupted run bit for bit and no temporary file
    remains."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    argv = [sys.executable, "train.py", *TRAIN, "--data_root", data_root, "--checkpoints_dir", str(tmp_path),
            "--n_epoch", "6", "--max_steps", "2"]
    train_run(data_root, tmp_path, "whole", "--n_epoch", "6", "--max_steps", "2")  # in this process: one start less
    run = tmp_path / "killed"
    rng = random.Random(11)
    kills = 0
    while kills < 2:
        proc = subprocess.Popen([*argv, "--name", "killed", "--resume"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start, wait = _progress(run), rng.uniform(0.0, 0.4)
        while proc.poll() is None and _progress(run) == start:  # until this run finishes an epoch ...
            time.sleep(0.005)
        deadline = time.monotonic() + wait
        while proc.poll() is None and time.monotonic() < deadline:  # ... then a random moment, or a write
            if kills == 0 and any(p.name.endswith(".tmp") for p in run.iterdir()):
                break
        if proc.poll() is not None:
            break  # the run finished before the kill: nothing left to interrupt
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        for path in (run / "last.pth", run / "best.pth"):  # whatever a kill leaves behind loads
            if path.exists():
                read_checkpoint(path)
    assert kills == 2, f"the run ended after {kills} kills; make it longer"
    subprocess.run([*argv, "--name", "killed", "--resume"], cwd=ROOT, env=env, check=True, capture_output=True,
                   timeout=600)
    _same_training_state(tmp_path / "whole" / "last.pth", run / "last.pth")
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_stale_temporary_files_are_removed_at_start(data_root, tmp_path, capsys):
    run = tmp_path / "stale"
    run.mkdir()
    ours = [run / ".last.pth.k3j9x_2a.tmp", run / ".best.pth.abcdefgh.tmp"]
    for p in ours:
        p.write_bytes(b"half a checkpoint")
    others = [run / "notes.tmp", run / ".last.pth.tmp", tmp_path / ".last.pth.abcdefgh.tmp"]  # not ours / not here
    for p in others:
        p.write_bytes(b"keep")
    train_run(data_root, tmp_path, "stale", "--n_epoch", "1", "--max_steps", "1")
    assert "removed 2 temporary file(s) of interrupted writes" in capsys.readouterr().out
    assert not any(p.exists() for p in ours) and all(p.exists() for p in others)


def test_full_disk_keeps_the_previous_checkpoints(data_root, tmp_path, capsys):
    train_run(data_root, tmp_path, "full", "--n_epoch", "1", "--max_steps", "1")
    run = tmp_path / "full"
    before = {p.name: p.read_bytes() for p in (run / "last.pth", run / "best.pth")}
    capsys.readouterr()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))  # a disk that takes 200 kB more per file
    try:
        with pytest.raises(SystemExit) as exit_info:
            train_run(data_root, tmp_path, "full", "--n_epoch", "2", "--max_steps", "1", "--resume")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()  # the notes on random backbones, then the one error line
    errors = [line for line in err.splitlines() if not line.startswith("note: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith(f"error: {run}/") and ".pth: cannot write (file too large)" in errors[0]
    assert {p.name: p.read_bytes() for p in (run / "last.pth", run / "best.pth")} == before
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("damage", ["truncated", "foreign", "text"])
def test_damaged_last_pth_at_resume_is_one_line(data_root, tmp_path, capsys, damage):
    train_run(data_root, tmp_path, "run", "--n_epoch", "1", "--max_steps", "1")
    last = tmp_path / "run" / "last.pth"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, last)
    else:
        last.write_text("not a checkpoint")
    capsys.readouterr()
    fails(capsys, train.main, [*TRAIN, "--data_root", data_root, "--checkpoints_dir", str(tmp_path), "--name", "run",
                               "--n_epoch", "2", "--resume"], f"{last}: ")


def test_last_pth_written_before_this_change_resumes(data_root, tmp_path):
    """A last.pth of ours from before: the numpy RNG state as numpy's tuple with a uint32 array, no position."""
    train_run(data_root, tmp_path, "old", "--n_epoch", "1", "--max_steps", "1")
    last = tmp_path / "old" / "last.pth"
    ckpt = torch.load(last, weights_only=True)
    np.random.seed(5)
    ckpt["rng"][0]["numpy"] = np.random.get_state()
    del ckpt["position"]
    torch.save(ckpt, last)
    train_run(data_root, tmp_path, "old", "--n_epoch", "2", "--max_steps", "1", "--resume")
    resumed = torch.load(last, weights_only=True)  # written anew: plain values only
    assert resumed["epoch"] == 1 and isinstance(resumed["rng"][0]["numpy"]["state"]["key"], list)


def test_unwritable_run_folder_stops_before_any_work(data_root, tmp_path, capsys):
    fails(capsys, train.main, [*TRAIN, "--data_root", data_root, "--checkpoints_dir", str(unwritable_dir(tmp_path)),
                               "--name", "run"], "cannot write")


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
            "false", "--checkpoints_dir", tmp_path, "--name", "diverged", *TINY_CLI]
    refused(capsys, train.main, argv, "training diverged", "regressor.conv.0.bias holds NaN or Inf", "nothing saved")
    assert not list((tmp_path / "diverged").glob("*.pth"))


def test_a_run_folder_is_never_replaced_and_resume_trains_what_the_run_was(tmp_path, capsys):
    """A new run with an existing run's name is refused (its files byte for byte as they were) unless --overwrite,
    which replaces it whole; --resume refuses options that no longer match what last.pth was trained with."""
    argv = ["--dataset", "synthetic", "--data_root", tmp_path / "data", "--synthetic_refs", "4", "--synthetic_size",
            "32", "--batch_size", "4", "--n_epoch", "1", "--max_steps", "1", "--val_crops", "center", "--progress",
            "false", "--checkpoints_dir", tmp_path, "--name", "run", *TINY_CLI]
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
