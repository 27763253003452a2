"""experiments/cross_dataset.py: one checkpoint tested on the whole of other sets, one row per set."""
from __future__ import annotations

import pytest

from ahiq.commands import test as test_script
from experiments import cross_dataset
from tests import fixtures_standard as fs
from tests.conftest import TINY_ARGS, run_main
from ahiq.utils.tables import read_csv


def test_checkpoint_on_whole_sets(authors_files, kadid_tree, tmp_path, capsys):
    folder, _ = authors_files
    tid = fs.build_tid2013(tmp_path / "tid", rows=fs.tid2013_rows()[:10])
    model = ["--checkpoint", str(folder / "ahiq.pth"), "--vit_weights", str(folder / "vit.safetensors"),
             "--cnn_weights", str(folder / "cnn.pth"), "--device", "cpu", "--crop_size", "32", *TINY_ARGS]
    table = cross_dataset.main(["--test", f"kadid10k={kadid_tree}", f"tid2013={tid}", "--crops", "center",
                                "--checkpoints_dir", str(tmp_path), *model])
    rows = read_csv(tmp_path / "cross_dataset" / "cross_dataset.csv")
    assert rows[0] == ["test set", "metric", "pairs", "PLCC", "PLCC(fitted)", "SRCC", "KRCC", "fit"]
    assert [r[:3] for r in rows[1:]] == [["kadid10k", "AHIQ", "79"], ["tid2013", "AHIQ", "10"]]
    # the form of each set's fitted mapping, or why there is none (the generated TID2013 crops score alike)
    assert rows[1][-1] in ("logistic5", "logistic4", "line") and rows[2][-1] in ("logistic5", "logistic4", "line",
                                                                                 "n/a (constant predictions)")
    assert "nan" not in {c for r in rows for c in r}
    # the same numbers as test.py on the whole set
    alone = run_main(test_script.main, ["--dataset", "kadid10k", "--data_root", kadid_tree, "--split", "all",
                                        "--crops", "center", "--output", tmp_path / "alone.txt", *model], capsys)
    assert float(rows[1][5]) == pytest.approx(alone.value["SRCC"], abs=1e-6)
    assert float(rows[1][4]) == pytest.approx(alone.value["PLCC_fitted"], abs=1e-6)
    assert f"| kadid10k | AHIQ | 79 | {alone.value['PLCC']:.4f} |" in table


def test_train_or_checkpoint_one_of_two(tmp_path, capsys):
    proc = run_main(cross_dataset.main, ["--test", "csiq=/nowhere"], capsys)
    assert proc.returncode == 2 and "give --train NAME=FOLDER to train, or --checkpoint FILE" in proc.stderr
    proc = run_main(cross_dataset.main, ["--checkpoint", "x.pth", "--test", "csiq"], capsys)
    assert proc.returncode == 2 and "csiq: give a dataset as NAME=FOLDER" in proc.stderr


def test_train_then_test_with_baselines(kadid_tree, tmp_path, capsys):
    """Without --checkpoint: train.py on one set, then every pair of the other, with PSNR on the same pairs."""
    import piq
    import torch
    from scipy import stats

    from ahiq.data.images import read_image
    from ahiq.utils.comparison import ScoredSet

    table = cross_dataset.main([
        "--train", f"synthetic={tmp_path / 'data'}", "--test", f"kadid10k={kadid_tree}", "--crops", "center",
        "--baselines", "psnr", "--checkpoints_dir", str(tmp_path), "--synthetic_refs", "4", "--synthetic_size", "32",
        "--crop_size", "32", "--n_epoch", "1", "--max_steps", "1", "--pretrained_backbones", "false", "--device", "cpu",
        "--val_crops", "center", "--progress", "false", *TINY_ARGS])
    run = tmp_path / "cross_synthetic"
    assert (run / "best.pth").is_file()
    rows = read_csv(run / "cross_dataset.csv")
    assert [r[:3] for r in rows[1:]] == [["kadid10k", "AHIQ", "79"], ["kadid10k", "PSNR", "79"]]
    scored = ScoredSet.read(run / "cross_kadid10k_baselines.csv")
    assert float(rows[2][5]) == pytest.approx(stats.spearmanr(scored.scores["PSNR"], scored.labels)[0], abs=1e-6)
    name = scored.names[-1]
    x, y = (torch.from_numpy(read_image(kadid_tree / "images" / n)).permute(2, 0, 1)[None] / 255
            for n in (name, f"{name[:3]}.png"))
    assert scored.scores["PSNR"][-1] == pytest.approx(float(piq.psnr(x, y)), rel=1e-6)
    assert "| kadid10k | PSNR | 79 |" in table and (run / "cross_kadid10k_types.png").is_file()
