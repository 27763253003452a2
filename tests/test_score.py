"""score.py end to end: pairing rules, CSV, and agreement with the authors' computation pattern."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data.images import pair_paths, read_image
from tests.conftest import ROOT, TINY_ARGS, random_pair_images
from utils.errors import UserError


def run_score(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "score.py", *args, *TINY_ARGS], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_pairing_rules(tmp_path):
    ref, dist = tmp_path / "ref", tmp_path / "dist"
    ref.mkdir()
    dist.mkdir()
    for name in ["A0001.bmp", "I03.BMP", "I01.png", "same.png"]:
        (ref / name).write_bytes(b"x")
    for name in ["A0001_00_00.bmp", "i03_11_5.bmp", "I01_01_01.png", "same.png", "orphan_1.png"]:
        (dist / name).write_bytes(b"x")
    pairs, problems = pair_paths(ref, dist)
    assert [(d.name, r.name) for d, r in pairs] == [
        ("A0001_00_00.bmp", "A0001.bmp"), ("I01_01_01.png", "I01.png"), ("i03_11_5.bmp", "I03.BMP"),
        ("same.png", "same.png")]
    assert len(problems) == 1 and "orphan_1.png: no reference" in problems[0]
    # KADID-10k keeps references and distorted images in one folder: a reference is not paired with itself.
    one = tmp_path / "images"
    one.mkdir()
    for name in ["I01.png", "I01_01_01.png", "I01_02_03.png"]:
        (one / name).write_bytes(b"x")
    pairs, problems = pair_paths(one, one)
    assert [(d.name, r.name) for d, r in pairs] == [("I01_01_01.png", "I01.png"), ("I01_02_03.png", "I01.png")]
    assert problems == []
    # a file against a file, and a folder against one reference file
    assert pair_paths(ref / "I01.png", dist / "I01_01_01.png")[0] == [(dist / "I01_01_01.png", ref / "I01.png")]
    assert len(pair_paths(ref / "I01.png", dist)[0]) == 5
    with pytest.raises(UserError, match="no such file"):
        pair_paths(tmp_path / "nope", dist)


def test_folder_pair_scored_end_to_end(tmp_path):
    names = [(f"A000{r}_0{k}_00.bmp", f"A000{r}.bmp") for r in (1, 2) for k in range(3)]
    random_pair_images(tmp_path, names, 80, 96)
    out = tmp_path / "scores.csv"
    proc = run_score("--ref", str(tmp_path / "ref"), "--dist", str(tmp_path / "dist"), "--pretrained_backbones",
                     "false", "--crop_size", "64", "--crops", "grid:4", "--batch_size", "4", "--device", "cpu",
                     "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["dist", "ref", "score"]
    assert [Path(r[0]).name for r in rows[1:]] == sorted(n for n, _ in names)
    assert all(Path(r[1]).name == Path(r[0]).name[:5] + ".bmp" for r in rows[1:])
    scores = [float(r[2]) for r in rows[1:]]
    assert all(np.isfinite(scores)) and len(set(scores)) == len(scores)
    assert "RANDOM weights" in proc.stderr
    table = [line for line in proc.stdout.splitlines() if line.startswith("A000")]
    assert len(table) == 6 and table[0].split()[-1] == f"{scores[0]:.4f}"


@pytest.fixture(scope="module")
def authors_setup(authors_files):
    folder, model = authors_files
    random_pair_images(folder, [("A0001_00_00.bmp", "A0001.bmp"), ("A0002_03_01.bmp", "A0002.bmp")], 240, 256)
    return folder, model


@pytest.mark.parametrize("crops", ["center", "five"])
def test_score_py_matches_the_authors_computation(authors_setup, crops):
    from benchmarks.authors_pattern import AuthorsPattern

    folder, model = authors_setup
    dist_dir = folder / "dist"
    if crops == "five":  # one pair keeps this test short; the computation is the same for every pair
        dist_dir = folder / "dist" / "A0001_00_00.bmp"
    out = folder / f"{crops}.csv"
    proc = run_score("--ref", str(folder / "ref"), "--dist", str(dist_dir), "--checkpoint", str(folder / "ahiq.pth"),
                     "--vit_weights", str(folder / "vit.safetensors"), "--cnn_weights", str(folder / "cnn.pth"),
                     "--crops", crops, "--precision", "fp32", "--device", "cpu", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    ours = {Path(r["dist"]).name: float(r["score"]) for r in csv.DictReader(out.open())}
    reference = AuthorsPattern(model)
    c = 224
    for name, score in ours.items():
        to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255  # noqa: E731
        dist = to_t(read_image(folder / "dist" / name))
        ref = to_t(read_image(folder / "ref" / (name[:5] + ".bmp")))
        h, w = dist.shape[-2:]
        centre = (h // 2 - c // 2, w // 2 - c // 2)
        positions = [centre] if crops == "center" else [(0, 0), (0, w - c), (h - c, 0), (h - c, w - c), centre]
        expected = reference.score_image(dist, ref, positions, c).item()
        assert abs(score - expected) < 1e-4, (name, score, expected)
    assert len(ours) == (2 if crops == "center" else 1)


def test_bf16_scores_close_to_fp32(tmp_path):
    random_pair_images(tmp_path, [("A0001_00_00.bmp", "A0001.bmp")], 64, 64)
    results = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.csv"
        proc = run_score("--ref", str(tmp_path / "ref"), "--dist", str(tmp_path / "dist"), "--pretrained_backbones",
                         "false", "--crop_size", "64", "--device", "cpu", "--precision", precision, "--output", str(out))
        assert proc.returncode == 0, proc.stderr
        results[precision] = float(next(csv.DictReader(out.open()))["score"])
    assert results["fp32"] != results["bf16"]
    assert abs(results["fp32"] - results["bf16"]) < 0.05
