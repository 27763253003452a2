"""Tests for data/synthetic.py: PIPAL layout, determinism, idempotence and pseudo-MOS properties."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.stats import spearmanr

from ahiq.data import synthetic
from ahiq.data.synthetic import (
    DISTORTIONS,
    LEVELS,
    MOS_MAX,
    MOS_MIN,
    RATER_NOISE_SD,
    clean_pseudo_mos,
    distorted_names,
    ensure_synthetic,
    psnr_rgb,
)
from ahiq.utils.errors import UserError

N_TYPES = len(DISTORTIONS)


@pytest.fixture(scope="module")
def default_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dataset at its default parameters (12 references, 128 px, seed 0), generated once."""
    return ensure_synthetic(tmp_path_factory.mktemp("synthetic") / "pipal")


def read_labels(root: Path) -> dict[str, list[tuple[str, float]]]:
    """``{ref_id: [(dist_name, score), ...]}`` parsed the way a PIPAL loader would."""
    labels = {}
    for path in sorted((root / "Train_Label").iterdir()):
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            name, score = line.split(",")
            rows.append((name, float(score)))
        labels[path.stem] = rows
    return labels


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def file_mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def clean_scores(root: Path, labels: dict[str, list[tuple[str, float]]]) -> dict[str, np.ndarray]:
    """Noise-free pseudo-MOS recomputed from the images on disk, ``{ref_id: (types, levels)}``."""
    out = {}
    for ref_id, rows in labels.items():
        ref = read_rgb(root / "Train_Ref" / f"{ref_id}.bmp")
        scores = [clean_pseudo_mos(ref, read_rgb(root / "Train_Dis" / name)) for name, _ in rows]
        out[ref_id] = np.array(scores).reshape(N_TYPES, LEVELS)
    return out


def test_layout_names_and_label_lines(default_root: Path) -> None:
    refs = sorted(p.name for p in (default_root / "Train_Ref").iterdir())
    dists = sorted(p.name for p in (default_root / "Train_Dis").iterdir())
    label_files = sorted(p.name for p in (default_root / "Train_Label").iterdir())
    assert refs == [f"A{i:04d}.bmp" for i in range(1, 13)]
    assert label_files == [f"A{i:04d}.txt" for i in range(1, 13)]
    assert len(dists) == 12 * N_TYPES * LEVELS == 288
    assert all(re.fullmatch(r"A\d{4}_\d{2}_\d{2}\.bmp", name) for name in dists)
    assert N_TYPES >= 5 and LEVELS >= 4

    labels = read_labels(default_root)
    for ref_id, rows in labels.items():
        text = (default_root / "Train_Label" / f"{ref_id}.txt").read_text(encoding="utf-8")
        assert text.endswith("\n") and not text.endswith("\n\n")
        assert [name for name, _ in rows] == distorted_names(ref_id)
        line_pattern = rf"{ref_id}_\d{{2}}_\d{{2}}\.bmp,\d{{3,4}}\.\d{{4}}"
        assert all(re.fullmatch(line_pattern, line) for line in text.splitlines())
    scores = np.array([s for rows in labels.values() for _, s in rows])
    assert scores.min() >= MOS_MIN and scores.max() <= MOS_MAX
    # The labels use most of the Elo-like range rather than a narrow band.
    assert scores.min() < 1000 and scores.max() > 1750

    ref = read_rgb(default_root / "Train_Ref" / "A0001.bmp")
    dist = read_rgb(default_root / "Train_Dis" / "A0001_03_02.bmp")
    assert ref.shape == dist.shape == (128, 128, 3) and ref.dtype == np.uint8
    other = read_rgb(default_root / "Train_Ref" / "A0002.bmp")
    assert np.abs(ref.astype(int) - other).mean() > 10  # references are distinct scenes
    assert ref.std() > 15  # and not flat

    meta = json.loads((default_root / "synthetic.json").read_text(encoding="utf-8"))
    assert meta["version"] == synthetic.VERSION and (meta["n_refs"], meta["size"], meta["seed"]) == (12, 128, 0)


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path: Path) -> None:
    a = ensure_synthetic(tmp_path / "a", n_refs=3, size=64, seed=5)
    b = ensure_synthetic(tmp_path / "b", n_refs=3, size=64, seed=5)
    c = ensure_synthetic(tmp_path / "c", n_refs=3, size=64, seed=6)
    for rel in ["Train_Label/A0002.txt", "Train_Ref/A0003.bmp", "Train_Dis/A0001_01_03.bmp", "synthetic.json"]:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    for rel in ["Train_Label/A0002.txt", "Train_Ref/A0003.bmp"]:
        assert (a / rel).read_bytes() != (c / rel).read_bytes(), rel


def test_second_call_rewrites_nothing(tmp_path: Path) -> None:
    root = ensure_synthetic(tmp_path / "d", n_refs=2, size=64)
    before = file_mtimes(root)
    assert ensure_synthetic(root, n_refs=2, size=64) == root
    assert file_mtimes(root) == before
    assert len(before) == 2 + 2 + 2 * N_TYPES * LEVELS + 1


def test_changed_parameters_regenerate_and_drop_stale_files(tmp_path: Path) -> None:
    root = ensure_synthetic(tmp_path / "d", n_refs=3, size=64)
    (root / "notes.txt").write_text("kept\n")
    old_label = (root / "Train_Label" / "A0001.txt").read_bytes()
    ensure_synthetic(root, n_refs=2, size=64, seed=1)
    assert sorted(p.name for p in (root / "Train_Ref").iterdir()) == ["A0001.bmp", "A0002.bmp"]
    assert not list((root / "Train_Dis").glob("A0003_*"))
    assert not (root / "Train_Label" / "A0003.txt").exists()
    assert (root / "Train_Label" / "A0001.txt").read_bytes() != old_label
    assert json.loads((root / "synthetic.json").read_text())["seed"] == 1
    assert (root / "notes.txt").read_text() == "kept\n"  # files that are not ours are left alone


def test_interrupted_generation_is_redone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "d"
    real_write = synthetic._write_bmp
    calls = []

    def failing_write(path: Path, rgb: np.ndarray) -> None:
        calls.append(path)
        if len(calls) == 10:
            raise RuntimeError("simulated crash")
        real_write(path, rgb)

    monkeypatch.setattr(synthetic, "_write_bmp", failing_write)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ensure_synthetic(root, n_refs=2, size=64)
    assert not (root / "synthetic.json").exists()
    monkeypatch.setattr(synthetic, "_write_bmp", real_write)
    ensure_synthetic(root, n_refs=2, size=64)
    assert (root / "synthetic.json").is_file()
    assert len(list((root / "Train_Dis").iterdir())) == 2 * N_TYPES * LEVELS
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []


def test_missing_file_triggers_regeneration(tmp_path: Path) -> None:
    root = ensure_synthetic(tmp_path / "d", n_refs=2, size=64)
    (root / "Train_Dis" / "A0002_04_01.bmp").unlink()
    ensure_synthetic(root, n_refs=2, size=64)
    assert (root / "Train_Dis" / "A0002_04_01.bmp").is_file()


def test_refuses_folder_it_did_not_write(tmp_path: Path) -> None:
    foreign = tmp_path / "PIPAL" / "Train_Ref" / "A0001.bmp"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"user data")
    with pytest.raises(UserError, match="not written by the synthetic generator"):
        ensure_synthetic(tmp_path / "PIPAL", n_refs=2, size=64)
    assert foreign.read_bytes() == b"user data"


@pytest.mark.parametrize("kwargs", [{"n_refs": 0}, {"n_refs": 10000}, {"size": 16}, {"seed": -1}])
def test_bad_parameters_are_user_errors(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(UserError):
        ensure_synthetic(tmp_path / "d", **kwargs)


def test_pseudo_mos_is_monotone_in_level_and_matches_definition(default_root: Path) -> None:
    labels = read_labels(default_root)
    clean = clean_scores(default_root, labels)
    for ref_id, rows in labels.items():
        noisy = np.array([s for _, s in rows]).reshape(N_TYPES, LEVELS)
        # The noise-free part strictly falls with the level for every type and reference.
        assert np.all(np.diff(clean[ref_id], axis=1) < 0), (ref_id, clean[ref_id])
        # Labels are the documented clean score plus small rater noise (clipped to the range).
        expected = np.clip(clean[ref_id], MOS_MIN, MOS_MAX)
        assert np.all(np.abs(noisy - expected) <= 5 * RATER_NOISE_SD), ref_id
        # Noise may swap two close levels, but only by a few noise standard deviations.
        assert np.all(np.diff(noisy, axis=1) < 4 * RATER_NOISE_SD), (ref_id, noisy)
    # Within each type, noise preserves the ranking almost everywhere.
    all_clean = np.stack(list(clean.values()))
    all_noisy = np.stack([np.array([s for _, s in rows]).reshape(N_TYPES, LEVELS) for rows in labels.values()])
    assert spearmanr(all_clean.ravel(), all_noisy.ravel())[0] > 0.99


def test_simple_full_reference_baseline_predicts_the_labels(default_root: Path) -> None:
    labels = read_labels(default_root)
    psnrs, scores = [], []
    for ref_id, rows in labels.items():
        ref = read_rgb(default_root / "Train_Ref" / f"{ref_id}.bmp")
        for name, score in rows:
            psnrs.append(psnr_rgb(ref, read_rgb(default_root / "Train_Dis" / name)))
            scores.append(score)
    assert spearmanr(psnrs, scores)[0] >= 0.7
    # Degradations are comparable across types: no single type occupies only the top or bottom of the scale.
    by_type = np.array(scores).reshape(len(labels), N_TYPES, LEVELS)
    assert np.all(by_type[:, :, 0].mean(axis=0) > 1450) and np.all(by_type[:, :, -1].mean(axis=0) < 1550)
