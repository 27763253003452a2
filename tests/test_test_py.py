"""test.py and score.py as users run them: every pair scored, NTIRE zip, pictures, bad input, download.sh.

The scripts' ``main(argv)`` run in this process; a few tests start real processes for exit codes and the
absence of tracebacks.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import pytest

from ahiq.commands import score as score_script
from ahiq.commands import test as test_script
from tests.conftest import ROOT, TINY_ARGS, TINY_CLI, random_pair_images, run_main

PIPAL_NAMES = [(f"A{r:04d}_{t:02d}_{k:02d}.bmp", f"A{r:04d}.bmp") for r, t, k in
               [(1, 0, 0), (1, 2, 5), (1, 10, 3), (5, 1, 1), (5, 6, 9), (17, 3, 2), (17, 11, 0)]]


MAINS = {"test.py": test_script.main, "score.py": score_script.main}


@pytest.fixture
def run(capsys):
    """``run(script, *args)``: the script's main in this process (returncode, stdout, stderr)."""
    return lambda script, *args: run_main(MAINS[script], list(args), capsys)


def run_process(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module")
def pipal_folder(authors_files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ntire")
    random_pair_images(folder, PIPAL_NAMES, 72, 80)
    labels = folder / "labels.txt"
    labels.write_text("".join(f"{d}, {1500 - 40 * i:.4f}\n" for i, (d, _) in enumerate(PIPAL_NAMES)).rstrip("\n"))
    return folder


def weights(authors_files) -> list[str]:
    folder, _ = authors_files
    return ["--checkpoint", str(folder / "ahiq.pth"), "--vit_weights", str(folder / "vit.safetensors"),
            "--cnn_weights", str(folder / "cnn.pth"), "--device", "cpu", "--crop_size", "64", *TINY_ARGS]


def test_every_pair_scored_with_ntire_zip(authors_files, pipal_folder, tmp_path, run):
    out, zipped = tmp_path / "results.txt", tmp_path / "submission.zip"
    proc = run("test.py", "--ref_dir", str(pipal_folder / "ref"), "--dist_dir", str(pipal_folder / "dist"),
               "--crops", "center", "--batch_size", "4", "--output", str(out), "--ntire_zip", str(zipped),
               *weights(authors_files))
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 7 and [line.split(",")[0] for line in lines] == sorted(d for d, _ in PIPAL_NAMES)
    with zipfile.ZipFile(zipped) as zf:
        assert sorted(zf.namelist()) == ["output.txt", "readme.txt"]
        assert zf.read("output.txt").decode().splitlines() == lines
        readme = zf.read("readme.txt").decode().splitlines()
    assert readme[0].startswith("runtime per image [s] : ") and float(readme[0].split(":")[1]) > 0
    assert readme[1] == "CPU[1] / GPU[0] : 1" and readme[2] == "Extra Data [1] / No Extra Data [0] : 0"
    assert "ahiq.pth" in proc.stderr and "vit.safetensors" in proc.stderr  # says what it used
    # batch size 1 gives the same scores (nothing dropped, nothing mixed up)
    out1 = tmp_path / "b1.txt"
    proc = run("test.py", "--ref_dir", str(pipal_folder / "ref"), "--dist_dir", str(pipal_folder / "dist"),
               "--crops", "center", "--batch_size", "1", "--output", str(out1), *weights(authors_files))
    assert proc.returncode == 0, proc.stderr
    for a, b in zip(lines, out1.read_text().splitlines()):
        assert a.split(",")[0] == b.split(",")[0] and abs(float(a.split(",")[1]) - float(b.split(",")[1])) < 1e-5


def test_labels_metrics_and_plot(authors_files, pipal_folder, tmp_path, run):
    plot = tmp_path / "scatter.png"
    proc = run("test.py", "--ref_dir", str(pipal_folder / "ref"), "--dist_dir", str(pipal_folder / "dist"),
               "--labels", str(pipal_folder / "labels.txt"), "--crops", "random:3", "--flip_tta", "true",
               "--output", str(tmp_path / "r.txt"), "--plot", str(plot), *weights(authors_files))
    assert proc.returncode == 0, proc.stderr
    line = [x for x in proc.stdout.splitlines() if x.startswith("test: ")][0]
    assert all(f"{k}=" in line for k in ("SRCC", "PLCC", "KRCC", "PLCC(fitted)", "RMSE(fitted)", "main"))
    assert " RMSE=" not in line  # the released-format file records no label scale: raw predictions
    img = cv2.imread(str(plot))
    assert img is not None and img.shape[0] > 200
    rows = (tmp_path / "r_labels.csv").read_text().splitlines()
    assert rows[0] == "name,prediction,label,raw_label" and len(rows) == 8
    assert rows[1].split(",")[2] == "1500.000000" and float(rows[1].split(",")[3]) == 1500.0


def test_flip_tta_averages_each_crop_with_its_mirror(authors_files, pipal_folder, tmp_path, run):
    import torch

    from ahiq.data.crops import crop_positions
    from ahiq.data.images import read_image

    _, model = authors_files
    out = tmp_path / "tta.txt"
    proc = run("test.py", "--ref_dir", pipal_folder / "ref", "--dist_dir", pipal_folder / "dist", "--crops", "random:3",
               "--flip_tta", "true", "--output", out, *weights(authors_files))
    assert proc.returncode == 0, proc.stderr
    written = {line.split(",")[0]: float(line.split(",")[1]) for line in out.read_text().splitlines()}
    changed = 0
    for dist_name, ref_name in PIPAL_NAMES[:3]:
        to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255  # noqa: E731
        dist, ref = to_t(read_image(pipal_folder / "dist" / dist_name)), to_t(read_image(pipal_folder / "ref" / ref_name))
        crops = []
        with torch.no_grad():
            for top, left in crop_positions("random:3", 72, 80, 64, seed=1919):  # test.py's default seed
                d, r = dist[..., top:top + 64, left:left + 64], ref[..., top:top + 64, left:left + 64]
                plain, mirrored = model(d, r).item(), model(d.flip(-1), r.flip(-1)).item()
                crops.append((plain + mirrored) / 2)
                changed += abs(plain - mirrored) > 1e-3
        assert written[dist_name] == pytest.approx(sum(crops) / len(crops), abs=2e-6), dist_name
    assert changed >= 6  # the mirror image scores differently: averaging it is visible in the result


def test_score_py_quality_maps(authors_files, pipal_folder, tmp_path, run):
    maps = tmp_path / "maps"
    dist = tmp_path / "dist"
    dist.mkdir()
    for name, _ in PIPAL_NAMES[:3]:
        shutil.copy(pipal_folder / "dist" / name, dist / name)
    proc = run("score.py", "--ref", str(pipal_folder / "ref"), "--dist", str(dist), "--crops", "five",
               "--save_maps", str(maps), *weights(authors_files))
    assert proc.returncode == 0, proc.stderr
    pngs = sorted(maps.glob("*.png"))
    assert [p.stem for p in pngs] == sorted(Path(n).stem for n, _ in PIPAL_NAMES[:3])
    for p in pngs:
        img = cv2.imread(str(p))
        assert img is not None and img.shape[1] > 2 * img.shape[0]  # image + two heatmaps side by side


def _bad_case(kind: str, pipal_folder: Path, tmp: Path) -> tuple[Path, Path, str, list[str]]:
    """A folder pair with one problem, and the file name the message must give."""
    ref, dist = tmp / "ref", tmp / "dist"
    shutil.copytree(pipal_folder / "ref", ref)
    shutil.copytree(pipal_folder / "dist", dist)
    extra: list[str] = []
    if kind == "missing reference":
        (ref / "A0005.bmp").unlink()
        return ref, dist, "A0005", extra
    if kind == "undecodable":
        (dist / "A0001_02_05.bmp").write_bytes(b"BM not really an image")
        return ref, dist, "A0001_02_05.bmp", extra
    if kind == "size mismatch":
        img = cv2.imread(str(dist / "A0017_03_02.bmp"))
        cv2.imwrite(str(dist / "A0017_03_02.bmp"), img[:-8])
        return ref, dist, "A0017_03_02.bmp", extra
    if kind == "smaller than crop":
        return ref, dist, "smaller than the 96x96 crop", ["--crop_size", "96"]
    if kind == "unpaired":
        shutil.copy(dist / "A0001_00_00.bmp", dist / "B0099_00_00.bmp")
        return ref, dist, "B0099_00_00.bmp", extra
    if kind == "not a checkpoint":
        bad = tmp / "not_ahiq.pth"
        import torch

        torch.save({"state_dict": {"fc.weight": torch.zeros(2)}}, bad)
        return ref, dist, "not_ahiq.pth", ["--checkpoint", str(bad)]
    raise ValueError(kind)


@pytest.mark.parametrize("script", ["test.py", "score.py"])
@pytest.mark.parametrize("kind", ["missing reference", "undecodable", "size mismatch", "smaller than crop",
                                  "unpaired", "not a checkpoint"])
def test_bad_input_is_one_clear_error_and_nothing_written(authors_files, pipal_folder, tmp_path, script, kind, run):
    ref, dist, needle, extra = _bad_case(kind, pipal_folder, tmp_path)
    out = tmp_path / "out.csv"
    out.write_text("previous results\n")
    flags = ["--ref_dir", str(ref), "--dist_dir", str(dist)]
    if script == "score.py":
        flags = ["--ref", str(ref), "--dist", str(dist)]
    proc = run(script, *flags, "--crops", "center", "--output", str(out), *weights(authors_files), *extra)
    assert proc.returncode == 2
    assert needle in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[0].startswith("error: ")
    assert out.read_text() == "previous results\n"  # untouched


def test_bad_input_as_a_process_exits_2_without_traceback(authors_files, pipal_folder, tmp_path):
    # (score.py as a process: tests/test_weights.py; every other bad input above runs main in this process)
    ref, dist, needle, extra = _bad_case("undecodable", pipal_folder, tmp_path)
    proc = run_process("test.py", "--ref_dir", str(ref), "--dist_dir", str(dist), "--crops", "center",
                       *weights(authors_files), *extra)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[0].startswith("error: ") and needle in proc.stderr, proc.stderr


def test_skip_bad_scores_the_rest(authors_files, pipal_folder, tmp_path, run):
    ref, dist, needle, _ = _bad_case("undecodable", pipal_folder, tmp_path)
    out = tmp_path / "r.txt"
    proc = run("test.py", "--ref_dir", str(ref), "--dist_dir", str(dist), "--crops", "center", "--skip_bad",
               "--output", str(out), *weights(authors_files))
    assert proc.returncode == 0, proc.stderr
    assert "skipped: " in proc.stderr and needle in proc.stderr
    assert len(out.read_text().splitlines()) == 6


def test_download_script_offline(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "curl").write_text("#!/bin/sh\nexit 6\n")  # no network: curl fails at once
    (fake_bin / "curl").chmod(0o755)
    for tool in ("sh", "sha256sum", "cut", "mkdir", "rm", "mv", "dirname", "cat", "basename", "sed", "grep"):
        if shutil.which(tool):
            os.symlink(shutil.which(tool), fake_bin / tool)
    os.symlink(sys.executable, fake_bin / "python3")
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "download.sh", repo / "download.sh")
    for part in ("pyproject.toml", "ahiq/__init__.py", "models/__init__.py", "models/config.py", "models/ahiq.py",
                 "utils/__init__.py", "utils/errors.py", "utils/declare.py"):  # what download.sh reads
        (repo / part).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / part, repo / part)
    (repo / "checkpoints" / "backbones").mkdir(parents=True)
    (repo / "checkpoints" / "backbones" / "resnet50.a1_in1k.safetensors").write_bytes(b"x" * 10)
    env = {"PATH": str(fake_bin), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(["sh", "download.sh"], cwd=repo, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("failed: checkpoints/ahiq_pipal/AHIQ_vit_p8_epoch33-da3ea303.pth: could not download")
    assert lines[1].startswith("failed: checkpoints/backbones/vit_base_patch8_224.augreg_in21k_ft_in1k.safetensors")
    assert "copy it to" in lines[1]
    assert lines[2].startswith("kept: checkpoints/backbones/resnet50.a1_in1k.safetensors")  # placed by hand: kept
    assert not list((repo / "checkpoints").rglob("*.part"))


def test_cross_dataset_on_the_real_kadid_subset(authors_files, tmp_path, run):
    from tests.conftest import shared_path

    mini = shared_path("data", "mini", "KADID-10k-mini")
    out = tmp_path / "kadid.txt"
    proc = run("test.py", "--dataset", "kadid10k", "--data_root", str(mini), "--split", "all", "--crops", "center",
               "--output", str(out), *weights(authors_files))
    assert proc.returncode == 0, proc.stderr
    assert "4 pairs from 1 references" in proc.stderr
    assert [line.split(",")[0] for line in out.read_text().splitlines()] == [
        "I01_01_02.png", "I01_01_05.png", "I01_06_05.png", "I01_15_05.png"]
    line = [x for x in proc.stdout.splitlines() if x.startswith("test: SRCC=")]
    assert len(line) == 1 and "KRCC=" in line[0]
    labels = (tmp_path / "kadid_labels.csv").read_text().splitlines()[1:]
    assert [float(r.split(",")[2]) for r in labels] == [4.33, 1.1, 2.27, 1.33]


def test_mini_set_every_figure_a_number_or_a_reason(authors_files, tmp_path, run):
    """The real 4-pair KADID-10k sample, whole, with baselines and --plot: the fit needs 5 pairs and says so
    (no nan anywhere), per-type rows of 1-2 pairs show their count and no SRCC, PSNR's SRCC is scipy's on the
    set's documented PSNRs; the results go beside the checkpoint (no --output); a split of one reference names
    --split all in its one line."""
    import numpy as np
    from scipy import stats

    from ahiq.utils.tables import read_csv
    from tests.conftest import shared_path

    mini = shared_path("data", "mini", "KADID-10k-mini")
    folder, _ = authors_files
    plot = tmp_path / "plot.png"
    common = ["--dataset", "kadid10k", "--data_root", str(mini), "--crops", "center", *weights(authors_files)]
    proc = run("test.py", *common, "--split", "all", "--baselines", "psnr,ssim", "--plot", str(plot))
    assert proc.returncode == 0, proc.stderr
    results = folder / "ahiq_results.txt"  # beside the checkpoint ahiq.pth, not in checkpoints/ahiq_pipal/
    assert f"to {results} " in proc.stderr and len(results.read_text().splitlines()) == 4
    line = next(x for x in proc.stdout.splitlines() if x.startswith("test: SRCC="))
    assert line.endswith("PLCC(fitted)=n/a(n=4<5) RMSE(fitted)=n/a(n=4<5) main=" + line.rsplit("main=", 1)[1])
    assert "nan" not in proc.stdout.lower() and cv2.imread(str(plot)) is not None
    table = (folder / "ahiq_results_comparison.md").read_text()
    rows = {r.split(" | ")[0][2:]: r.split(" | ") for r in table.splitlines() if r.startswith("| ")}
    psnr = stats.spearmanr([40.25, 20.47, 17.84, 20.95], [4.33, 1.1, 2.27, 1.33])[0]
    assert rows["PSNR"][2] == f"{psnr:.4f}" and rows["PSNR"][5:7] == ["n/a (n=4<5)", "n/a (n=4<5)"]
    assert rows["01"][2:] == ["2", "n/a (n<5)", "n/a (n<5)", "n/a (n<5) |"]
    assert rows["06"][2] == "1" and "nan" not in table
    for name in ("ahiq_results_comparison.csv", "ahiq_results_types.csv"):
        cells = [c for r in read_csv(folder / name) for c in r]
        assert "nan" not in cells and ("n/a (n=4<5)" in cells or "n/a (n<5)" in cells)
    assert np.isfinite(proc.value["SRCC"]) and proc.value["notes"]["PLCC_fitted"] == "n=4<5"
    for suffix in ("", "_labels", "_baselines", "_comparison", "_types", "_scatter", "_types"):
        for found in folder.glob(f"ahiq_results{suffix}.*"):
            found.unlink()
    proc = run("test.py", *common, "--output", str(tmp_path / "r.txt"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "1 reference(s) cannot be split 6:2:2" in proc.stderr and "use --split all (test.py)" in proc.stderr
    assert "--split_by pair" in proc.stderr


def test_results_go_beside_their_checkpoint(tmp_path):
    from ahiq.options.test_options import default_output

    run = tmp_path / "checkpoints" / "mine"
    run.mkdir(parents=True)
    (run / "opt.json").write_text("{}")
    assert default_output(str(run / "best.pth"), tmp_path / "checkpoints" / "ahiq_pipal", False) == run / "results.txt"
    assert default_output(str(run / "last.pth"), run, True) == run / "last_results.txt"
    assert default_output(str(tmp_path / "w" / "m.pth"), run, True) == tmp_path / "w" / "m_results.txt"
    assert default_output(None, run, False) == run / "results.txt"  # the released checkpoint: checkpoints/<name>/
    assert default_output("none", run, False) == Path("results.txt")
    assert default_output("None", run, True) == run / "results.txt"


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A one-step training run on the synthetic set (labels ~1000..1950) in ``<root>/tiny``."""
    from ahiq.commands import train

    root = tmp_path_factory.mktemp("synthetic_run")
    train.main(["--dataset", "synthetic", "--data_root", str(root / "data"), "--synthetic_refs", "4",
                "--synthetic_size", "64", "--batch_size", "4", "--max_steps", "1", "--n_epoch", "1",
                "--val_crops", "center", "--progress", "false", "--checkpoints_dir", str(root), "--name", "tiny",
                *TINY_CLI])
    return root


def test_labels_on_another_scale_get_raw_predictions_and_fitted_metrics(synthetic_run, tmp_path, capsys):
    import numpy as np

    from ahiq.commands import test as test_script
    from ahiq.models.checkpoint import read_checkpoint

    folder = tmp_path / "pairs"
    random_pair_images(folder, PIPAL_NAMES, 40, 48)
    (folder / "mos.txt").write_text("".join(f"{d},{5 - 0.5 * i:.2f}\n" for i, (d, _) in enumerate(PIPAL_NAMES)))
    common = ["--checkpoints_dir", str(synthetic_run), "--name", "tiny", "--ref_dir", str(folder / "ref"),
              "--dist_dir", str(folder / "dist"), "--labels", str(folder / "mos.txt"), "--crops", "center", *TINY_CLI]
    raw = test_script.main([*common, "--output", str(tmp_path / "raw.txt")])
    captured = capsys.readouterr()
    line = [x for x in captured.out.splitlines() if x.startswith("test: ")][0]
    assert "PLCC(fitted)=" in line and "RMSE(fitted)=" in line and " RMSE=" not in line
    assert "labels 2..5 lie outside the training range" in captured.err
    assert np.isnan(raw["RMSE"]) and np.isfinite(raw["RMSE_fitted"]) and raw["RMSE_fitted"] < 1.5
    forced = test_script.main([*common, "--output", str(tmp_path / "mapped.txt"), "--denormalize", "true"])
    assert " RMSE=" in capsys.readouterr().out and forced["RMSE"] > 300  # 1..5 labels against ~1000..1950
    norm = read_checkpoint(synthetic_run / "tiny" / "best.pth")[2]["score_norm"]
    predicted = [float(x.split(",")[1]) for x in (tmp_path / "raw.txt").read_text().splitlines()]
    mapped = [float(x.split(",")[1]) for x in (tmp_path / "mapped.txt").read_text().splitlines()]
    assert all(abs(p) < 50 for p in predicted)  # the network's own output, not the training scale
    expected = np.asarray(predicted) * (norm["hi"] - norm["lo"]) + norm["lo"]
    assert np.allclose(mapped, expected, atol=1e-3 * (norm["hi"] - norm["lo"]))
    # correlations and the fitted PLCC/RMSE do not depend on the scale the predictions are written on
    for key in ("SRCC", "PLCC", "KRCC", "PLCC_fitted", "RMSE_fitted"):
        assert raw[key] == pytest.approx(forced[key], abs=1e-3), key


def test_same_dataset_predictions_on_the_training_scale(synthetic_run, tmp_path, capsys):
    from ahiq.commands import test as test_script

    metrics = test_script.main(["--checkpoints_dir", str(synthetic_run), "--name", "tiny", "--dataset", "synthetic",
                                "--data_root", str(synthetic_run / "data"), "--synthetic_refs", "4",
                                "--synthetic_size", "64", "--split", "val", "--crops", "center",
                                "--output", str(tmp_path / "val.txt"), *TINY_CLI])
    captured = capsys.readouterr()
    assert "predictions on the training label scale" in captured.err
    line = [x for x in captured.out.splitlines() if x.startswith("test: ")][0]
    assert " RMSE=" in line and "PLCC(fitted)=" in line and metrics["RMSE"] < 1000
    scores = [float(x.split(",")[1]) for x in (tmp_path / "val.txt").read_text().splitlines()]
    assert len(scores) == 24 and all(500 < s < 2500 for s in scores)
