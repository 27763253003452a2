"""The repeated-split protocol runs end to end on a tiny synthetic set."""
from __future__ import annotations

import re

import pytest

from ahiq.engine.device import native_bf16
from experiments import standard
from tests.conftest import TINY_ARGS


def test_repeated_splits_table(tmp_path, capsys):
    table = standard.main([
        "--dataset", "synthetic", "--seeds", "2", "--split_ratio", "3:1:1", "--test_crops", "center",
        "--checkpoints_dir", str(tmp_path), "--data_root", str(tmp_path / "data"), "--synthetic_refs", "5",
        "--synthetic_size", "32", "--crop_size", "32", "--batch_size", "4", "--n_epoch", "1", "--max_steps", "2",
        "--pretrained_backbones", "false", "--device", "cpu", "--val_crops", "center", "--progress", "false", *TINY_ARGS])
    lines = table.splitlines()
    assert lines[0] == "| synthetic (2 splits) | SRCC | PLCC | KRCC | PLCC(fitted) | RMSE(fitted) | fit |"
    assert lines[2].startswith("| median | ") and lines[3].startswith("| mean ± std | ")
    assert len(re.findall(r"-?\d\.\d{4}", lines[2])) == 5
    assert (tmp_path / "synthetic_splits.md").read_text() == table
    for seed in (0, 1):
        run = tmp_path / f"synthetic_split{seed}"
        assert (run / "best.pth").is_file() and len((run / "test_results.txt").read_text().splitlines()) == 24
    assert "test: SRCC=" in capsys.readouterr().out


def test_repeated_splits_on_the_one_reference_mini_set(tmp_path, capsys):
    """The README's small-set recipe (tiny network): pairs split, not references, 1:1:2, no score normalisation
    (one training pair has no spread); every split trains, writes best.pth (a one-pair validation has no
    correlation) and tests its two pairs; every figure of every table is a number or a stated reason."""
    from tests.conftest import shared_path

    mini = shared_path("data", "mini", "KADID-10k-mini")
    table = standard.main([
        "--dataset", "kadid10k", "--data_root", str(mini), "--split_by", "pair", "--split_ratio", "1:1:2",
        "--score_norm", "none", "--seeds", "2", "--n_epoch", "1", "--batch_size", "1", "--test_crops", "center",
        "--val_crops", "center", "--crop_size", "64", "--pretrained_backbones", "false", "--baselines", "psnr,ssim",
        "--checkpoints_dir", str(tmp_path), "--device", "cpu", "--progress", "false", *TINY_ARGS])
    out = capsys.readouterr()
    assert "the parts share references" in out.err
    for seed in (0, 1):
        run = tmp_path / f"kadid10k_split{seed}"
        assert (run / "best.pth").is_file() and len((run / "test_results.txt").read_text().splitlines()) == 2
    assert "nan" not in table.lower() and table.startswith(
        "| kadid10k [split by pair: the parts share references] (2 splits) | SRCC |")
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in table.splitlines() if line.startswith("| ")}
    assert rows["median"][4:] == ["n/a (n=2<5)", "n/a (n=2<5)", "n/a (n=2<5) |"]
    assert re.fullmatch(r"-?1\.0000", rows["split 0"][1]) and rows["PSNR"][1] == "2"
    assert rows["01"][3:] == ["n/a (n<5)"] * 2 + ["n/a (n<5) |"]
    for suffix in ("_comparison.csv", "_types.csv"):
        assert "nan" not in (tmp_path / f"kadid10k{suffix}").read_text().lower()


@pytest.mark.slow
def test_ablations_table_over_every_preset(tmp_path, capsys):
    """Every ablation preset trains (overridden to a tiny synthetic run), the table has one row per preset with
    >= 4 different trainable-parameter counts, and each checkpoint scores through score.py with its
    architecture read back from the file (same scores as the test run)."""
    import json

    from ahiq.commands import score
    from experiments import ablations
    from ahiq.models.checkpoint import read_checkpoint

    presets = ablations.DEFAULT_PRESETS
    assert len(presets) >= 6 and all((ablations.PRESETS_DIR / f"{p}.json").is_file() for p in presets)
    table = ablations.main([
        "--dataset", "synthetic", "--seeds", "1", "--split_ratio", "3:1:1", "--test_crops", "center",
        "--checkpoints_dir", str(tmp_path), "--data_root", str(tmp_path / "data"), "--synthetic_refs", "5",
        "--synthetic_size", "32", "--crop_size", "32", "--batch_size", "4", "--n_epoch", "1", "--max_steps", "1",
        "--num_workers", "0", "--pretrained_backbones", "false", "--device", "cpu", "--val_crops", "center",
        "--progress", "false", *TINY_ARGS])
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| preset")]
    assert [r.split(" | ")[0][2:] for r in rows] == list(presets)
    assert table.splitlines()[2] == ("| preset | trainable parameters | SRCC | PLCC | KRCC | PLCC(fitted) | "
                                     "RMSE(fitted) | training time |")
    counts = {r.split(" | ")[1] for r in rows}
    assert len(counts) >= 4 and (tmp_path / "ablations_synthetic.md").read_text() == table
    for preset in presets:
        run = tmp_path / f"ablation_{preset}_split0"
        change = {k: v for k, v in json.loads((ablations.PRESETS_DIR / f"{preset}.json").read_text()).items()
                  if k in ("branches", "fusion", "pooling")}
        stored = read_checkpoint(run / "best.pth")[2]["model_config"]
        assert {k: stored[k] for k in change} == change and list(stored["vit_blocks"]) == [1, 3], preset
        first = (run / "test_results.txt").read_text().splitlines()[0].split(",")[0]
        dist = tmp_path / "data" / "Train_Dis" / first
        ref = tmp_path / "data" / "Train_Ref" / f"{first.split('_')[0]}.bmp"
        out = tmp_path / f"{preset}.csv"
        capsys.readouterr()
        score.main(["--checkpoint", str(run / "best.pth"), "--ref", str(ref), "--dist", str(dist), "--crops", "center",
                    "--crop_size", "32", "--pretrained_backbones", "false", "--device", "cpu", "--output", str(out),
                    "--quiet"])
        assert "RANDOM weights" in capsys.readouterr().err  # backbones only: the heads came from the file
        assert out.read_text().splitlines()[1].split(",")[0] == str(dist)


def test_demo_prints_the_same_line_on_every_run(tmp_path, capsys):
    from experiments import demo

    # the demo's own code path on a shortened schedule and a small architecture; no time limit decides anything
    short = ["--synthetic_refs", "4", "--batch_size", "4", "--max_steps", "2", *TINY_ARGS]
    lines = [demo.main(["--demo_dir", str(tmp_path / f"run{k}"), *short]) for k in range(2)]
    precision = "bf16" if native_bf16("cpu") else "fp32"
    assert lines[0] == lines[1]
    assert re.fullmatch(r"demo: val SRCC=-?\d\.\d{4} PLCC=-?\d\.\d{4} \(synthetic set, 4 refs of 32x32, 1 held-out "
                        rf"refs; random-init backbones, {precision}, epoch [12]\)", lines[0]), lines[0]
    out = capsys.readouterr().out
    assert out.count(lines[0]) == 2 and "time limit" not in out
    scored = (tmp_path / "run0" / "pairs_scores.csv").read_text().splitlines()
    assert scored[0] == "dist,ref,score" and len(scored) == 7  # six distortion types of one held-out reference
    again = (tmp_path / "run1" / "pairs_scores.csv").read_text().splitlines()
    assert [row.rsplit(",", 1)[1] for row in scored] == [row.rsplit(",", 1)[1] for row in again]


def test_an_option_added_to_the_configs_reaches_the_test_run(tmp_path, monkeypatch):
    """Experiments derive each test run from the training run's configs: a new option (one declared field of
    RunConfig, made here) is a flag of both scripts and reaches test.py through opt.json, with nothing in
    experiments/ or options/ listing it."""
    import dataclasses

    from ahiq.engine import config, device, session
    from ahiq.utils.declare import option

    probed = dataclasses.make_dataclass("RunConfig", [("probe", int, option(0, "a new option", low=0, high=9))],
                                        bases=(device.RunConfig,), frozen=True)
    for module in (config, device):  # where RunConfig is defined, and its re-export
        monkeypatch.setattr(module, "RunConfig", probed)
    seen = []
    start = session.ScoringSession.__init__
    monkeypatch.setattr(session.ScoringSession, "__init__",
                        lambda self, cfg, ctx=None, **kw: (seen.append(cfg), start(self, cfg, ctx, **kw))[1])
    standard.main(["--dataset", "synthetic", "--seeds", "1", "--split_ratio", "3:1:1", "--test_crops", "center",
                   "--checkpoints_dir", str(tmp_path), "--data_root", str(tmp_path / "data"), "--synthetic_refs", "5",
                   "--synthetic_size", "32", "--crop_size", "32", "--batch_size", "4", "--n_epoch", "1",
                   "--max_steps", "1", "--pretrained_backbones", "false", "--device", "cpu", "--val_crops", "center",
                   "--progress", "false", "--skip_bad", "--deform_impl", "torchvision", "--probe", "7", *TINY_ARGS])
    assert [(cfg.run.probe, type(cfg.run).__name__, cfg.skip_bad) for cfg in seen] == [(7, "RunConfig", True)]
    run = tmp_path / "synthetic_split0"
    import json

    saved = json.loads((run / "opt.json").read_text())
    assert saved["run"]["probe"] == 7 and saved["skip_bad"] and saved["model"]["deform_impl"] == "torchvision"


def test_experiments_answer_help_before_torch_is_imported():
    """``--help`` of every experiment parses and answers without loading torch, timm or piq."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import contextlib, io, json, runpy, sys\ncodes = []\n"
            "for script in ('standard', 'cross_dataset', 'ablations', 'demo'):\n"
            "    sys.argv = [script, '--help']\n"
            "    try:\n"
            "        with contextlib.redirect_stdout(io.StringIO()):\n"
            "            runpy.run_path(f'experiments/{script}.py', run_name='__main__')\n"
            "    except SystemExit as stop:\n        codes.append(stop.code)\n"
            "print(json.dumps([codes, sorted(m for m in ('torch', 'torchvision', 'timm', 'piq') if m in sys.modules)]))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    codes, heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert codes == [0, 0, 0, 0] and heavy == [], (codes, heavy, proc.stderr[-2000:])
