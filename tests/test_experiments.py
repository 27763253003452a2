"""The repeated-split protocol runs end to end on a tiny synthetic set."""
from __future__ import annotations

import re

from experiments import standard
from tests.conftest import TINY_ARGS


def test_repeated_splits_table(tmp_path, capsys):
    table = standard.main([
        "--dataset", "synthetic", "--seeds", "2", "--split_ratio", "3:1:1", "--test_crops", "center",
        "--checkpoints_dir", str(tmp_path), "--data_root", str(tmp_path / "data"), "--synthetic_refs", "5",
        "--synthetic_size", "32", "--crop_size", "32", "--batch_size", "4", "--n_epoch", "1", "--max_steps", "2",
        "--pretrained_backbones", "false", "--device", "cpu", "--val_crops", "center", "--progress", "false", *TINY_ARGS])
    lines = table.splitlines()
    assert lines[0] == "| synthetic (2 splits) | SRCC | PLCC | KRCC | PLCC(fitted) | RMSE(fitted) |"
    assert lines[2].startswith("| median | ") and lines[3].startswith("| mean ± std | ")
    assert len(re.findall(r"-?\d\.\d{4}", lines[2])) == 5
    assert (tmp_path / "synthetic_splits.md").read_text() == table
    for seed in (0, 1):
        run = tmp_path / f"synthetic_split{seed}"
        assert (run / "best.pth").is_file() and len((run / "test_results.txt").read_text().splitlines()) == 24
    assert "test: SRCC=" in capsys.readouterr().out
