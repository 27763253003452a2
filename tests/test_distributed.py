"""Data-parallel training with torchrun on the CPU (gloo): two processes, one set of files, full validation
equal to a single process's."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, TINY_ARGS, run_main

COMMON = ["--dataset", "synthetic", "--synthetic_refs", "4", "--synthetic_size", "64", "--crop_size", "32",
          "--pretrained_backbones", "false", "--device", "cpu", *TINY_ARGS]


def _torchrun(tmp_path, *extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py",
           *COMMON, "--data_root", str(tmp_path / "data"), "--batch_size", "2", "--checkpoints_dir",
           str(tmp_path / "ck"), "--name", "ddp", "--max_steps", "3", "--val_crops", "center", "--progress", "false",
           *extra]
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path, capsys):
    proc = _torchrun(tmp_path, "--n_epoch", "1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    starts = [line for line in proc.stdout.splitlines() if line.startswith("run: ")]
    assert len(starts) == 1 and "world_size=2" in starts[0] and "val=24 pairs from 1 references" in starts[0]
    epochs = [line for line in proc.stdout.splitlines() if line.startswith("epoch 1/1")]
    assert len(epochs) == 1 and "val SRCC=" in epochs[0]  # logged once, by rank 0
    ckpt = torch.load(tmp_path / "ck" / "ddp" / "last.pth", weights_only=True)
    assert ckpt["epoch"] == 0 and set(ckpt["rng"]) == {0, 1}
    assert ckpt["scheduler_state_dict"]["last_epoch"] == 3  # 3 steps per rank, in lockstep
    # The sharded, gathered validation equals one process scoring the same split with the same weights.
    from ahiq.commands import test as test_script

    run = tmp_path / "ck" / "ddp"
    single = run_main(test_script.main, [*COMMON, "--data_root", tmp_path / "data", "--split", "val", "--split_file",
                                         run / "split.json", "--checkpoint", run / "last.pth", "--crops", "center",
                                         "--batch_size", "3", "--output", tmp_path / "single.txt"], capsys)
    assert single.returncode == 0, single.stderr
    assert "24 pairs from 1 references" in single.stderr
    for key in ("SRCC", "PLCC", "KRCC"):  # invariant to the min-max scale test.py maps predictions back through
        assert abs(single.value[key] - ckpt["metrics"][key]) < 1e-6, (key, single.value, ckpt["metrics"])
    proc = _torchrun(tmp_path, "--n_epoch", "2", "--resume")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resumed from" in proc.stdout and "epoch 2/2" in proc.stdout
    assert torch.load(tmp_path / "ck" / "ddp" / "last.pth", weights_only=True)["epoch"] == 1
