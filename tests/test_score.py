"""score.py end to end (its ``main`` in this process): pairing rules, CSV, agreement with the authors'
computation pattern, bf16 against fp32, and the crop-averaged quality maps of ``--save_maps``."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from ahiq.commands import score as score_script
from ahiq.data.crops import crop_positions
from ahiq.data.images import pair_paths, read_image
from tests.conftest import TINY_ARGS, random_pair_images, run_main
from ahiq.utils.errors import UserError


@pytest.fixture
def run_score(capsys):
    """``run_score(*args)``: score.py's main with the tiny architecture (returncode, stdout, stderr)."""
    return lambda *args: run_main(score_script.main, [*args, *TINY_ARGS], capsys)


@pytest.fixture(scope="module")
def small_checkpoint(small_model, tmp_path_factory):
    """``small_model``'s heads and architecture in our checkpoint format: with ``--seed 0`` (the seed its random
    backbones were made with) and ``--pretrained_backbones false``, score.py rebuilds exactly ``small_model``."""
    from ahiq.models.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("small") / "small.pth"
    save_checkpoint(path, small_model)
    return path


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(1, 3, H, W)`` float in [0, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


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


def test_folder_pair_scored_end_to_end(tmp_path, run_score):
    names = [(f"A000{r}_0{k}_00.bmp", f"A000{r}.bmp") for r in (1, 2) for k in range(3)]
    random_pair_images(tmp_path, names, 80, 96)
    out = tmp_path / "scores.csv"
    proc = run_score("--ref", str(tmp_path / "ref"), "--dist", str(tmp_path / "dist"), "--pretrained_backbones",
                     "false", "--crop_size", "64", "--crops", "grid:4", "--batch_size", "4", "--device", "cpu",
                     "--checkpoint", "none", "--output", str(out))
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
def test_score_py_matches_the_authors_computation(authors_setup, crops, run_score):
    from benchmarks.authors_pattern import AuthorsPattern

    folder, model = authors_setup
    dist_dir = folder / "dist"
    if crops == "five":  # one pair keeps this test short; the computation is the same for every pair
        dist_dir = folder / "dist" / "A0001_00_00.bmp"
    out = folder / f"{crops}.csv"
    proc = run_score("--ref", folder / "ref", "--dist", dist_dir, "--checkpoint", folder / "ahiq.pth",
                     "--vit_weights", str(folder / "vit.safetensors"), "--cnn_weights", str(folder / "cnn.pth"),
                     "--crops", crops, "--precision", "fp32", "--device", "cpu", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    ours = {Path(r["dist"]).name: float(r["score"]) for r in csv.DictReader(out.open())}
    reference = AuthorsPattern(model)
    c = 224
    for name, score in ours.items():
        dist = to_tensor(read_image(folder / "dist" / name))
        ref = to_tensor(read_image(folder / "ref" / (name[:5] + ".bmp")))
        h, w = dist.shape[-2:]
        centre = (h // 2 - c // 2, w // 2 - c // 2)
        positions = [centre] if crops == "center" else [(0, 0), (0, w - c), (h - c, 0), (h - c, w - c), centre]
        expected = reference.score_image(dist, ref, positions, c).item()
        assert abs(score - expected) < 1e-4, (name, score, expected)
    assert len(ours) == (2 if crops == "center" else 1)


def test_bf16_scores_close_to_fp32(tmp_path, run_score, small_checkpoint):
    names = [(f"A000{r}_0{k}_00.bmp", f"A000{r}.bmp") for r in (1, 2) for k in range(4)]
    random_pair_images(tmp_path, names, 64, 96)
    results = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.csv"
        proc = run_score("--ref", tmp_path / "ref", "--dist", tmp_path / "dist", "--checkpoint", small_checkpoint,
                         "--pretrained_backbones", "false", "--seed", "0", "--crop_size", "64", "--crops", "grid:2",
                         "--device", "cpu", "--precision", precision, "--output", out)
        assert proc.returncode == 0, proc.stderr
        results[precision] = np.array([float(r["score"]) for r in csv.DictReader(out.open())])
    fp32, bf16 = results["fp32"], results["bf16"]
    assert fp32.std() > 0.05  # the pairs' scores spread: a constant output would not pass what follows
    assert np.abs(fp32 - bf16).max() > 1e-5  # bf16 autocast did run
    # bf16 rounding moves these scores by ~0.002; a wrong cast (weights or maps in low precision, a missed
    # normalisation) moves them by far more than 0.006 or breaks their agreement with fp32
    assert np.abs(fp32 - bf16).max() < 0.006
    assert np.corrcoef(fp32, bf16)[0, 1] > 0.999


def test_save_maps_average_the_crop_maps(tmp_path, run_score, monkeypatch, small_model, small_checkpoint):
    """The maps --save_maps draws are each crop's f and w, upsampled to pixels and averaged where crops overlap."""
    from ahiq.engine import session

    random_pair_images(tmp_path, [("A0001_00_00.bmp", "A0001.bmp")], 80, 112)
    drawn = {}

    def capture(image, score_map, weight_map, path, title="", name=""):
        drawn.update(image=image, f=score_map, w=weight_map, path=Path(path))
        return Path(path)

    monkeypatch.setattr(session, "save_quality_map", capture)
    proc = run_score("--ref", tmp_path / "ref", "--dist", tmp_path / "dist", "--checkpoint", small_checkpoint,
                     "--pretrained_backbones", "false", "--crop_size", "64", "--crops", "grid:6", "--seed", "0",
                     "--device", "cpu",
                     "--save_maps", tmp_path / "maps", "--output", tmp_path / "s.csv")
    assert proc.returncode == 0, proc.stderr
    assert drawn["path"] == tmp_path / "maps" / "A0001_00_00.png"
    # by hand: the same network (small_model), one crop at a time
    dist = to_tensor(read_image(tmp_path / "dist" / "A0001_00_00.bmp"))
    ref = to_tensor(read_image(tmp_path / "ref" / "A0001.bmp"))
    assert drawn["image"].shape == (80, 112, 3)
    positions = crop_positions("grid:6", 80, 112, 64, seed=0)
    assert len(positions) == 6 and len(set(positions)) == 6
    total_f, total_w, count = np.zeros((80, 112)), np.zeros((80, 112)), np.zeros((80, 112))
    scores = []
    with torch.no_grad():
        for top, left in positions:
            window = (slice(None), slice(None), slice(top, top + 64), slice(left, left + 64))
            score, f, w = small_model(dist[window], ref[window], return_maps=True)
            scores.append(score.item())
            # each map cell covers an 8x8 patch of the crop
            total_f[top:top + 64, left:left + 64] += np.kron(f[0, 0].numpy(), np.ones((8, 8)))
            total_w[top:top + 64, left:left + 64] += np.kron(w[0, 0].numpy(), np.ones((8, 8)))
            count[top:top + 64, left:left + 64] += 1
    assert count.min() >= 1 and count.max() > 1  # every pixel covered, some by several crops
    np.testing.assert_allclose(drawn["f"], total_f / count, rtol=0, atol=1e-5)
    np.testing.assert_allclose(drawn["w"], total_w / count, rtol=0, atol=1e-5)
    assert np.std(drawn["f"]) > 1e-2  # maps that vary: the averaging is visible
    written = float(next(csv.DictReader((tmp_path / "s.csv").open()))["score"])
    assert written == pytest.approx(np.mean(scores), abs=1e-6)


def test_quality_maps_mark_uncovered_areas_and_use_a_robust_range(small_model, tmp_path):
    import cv2

    from ahiq.engine.scoring import score_pairs
    from ahiq.utils.visual import robust_range, save_quality_map

    random_pair_images(tmp_path, [("d.png", "r.png")], 40, 56)
    (result,) = score_pairs(small_model, [(tmp_path / "dist" / "d.png", tmp_path / "ref" / "r.png")], "center", 32,
                            with_maps=True, progress=False)
    covered = np.isfinite(result.score_map)
    assert covered.shape == (40, 56) and covered.sum() == 32 * 32  # the 32x32 centre crop, NaN elsewhere
    assert covered[4:36, 12:44].all() and np.isfinite(result.weight_map).sum() == 32 * 32
    values = np.arange(1000, dtype=float)
    values[0] = -1e9  # one extreme pixel does not set the colour scale
    assert robust_range(values) == pytest.approx((9.99, 989.01))  # 1st and 99th percentiles, not -1e9
    assert robust_range(np.full(4, np.nan)) == (0.0, 1.0)

    def grey_pixels(score_map, weight_map):
        path = save_quality_map(np.zeros((40, 56, 3), np.uint8), score_map, weight_map, tmp_path / "m.png")
        img = cv2.imread(str(path))
        return int(np.all(img == 211, axis=-1).sum())

    marked = grey_pixels(result.score_map, result.weight_map)  # light grey (211, 211, 211) where no crop covered
    assert marked > 500 and grey_pixels(np.nan_to_num(result.score_map), np.nan_to_num(result.weight_map)) < marked // 100
