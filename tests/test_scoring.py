"""Scoring with a reference's side reused: equal to pair by pair, one encoding per reference, results in order."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ahiq.data.crops import crop_positions
from ahiq.data.images import pair_paths
from ahiq.engine.scoring import CropPlanner, reference_order, score_pairs
from ahiq.models.config import SEED
from tests.conftest import SHARED, random_pair_images
from ahiq.utils.errors import UserError


@pytest.fixture(scope="module")
def several_references(tmp_path_factory):
    """Three references of two sizes with 4, 1 and 3 distorted images, given interleaved (not grouped)."""
    folder = tmp_path_factory.mktemp("refs")
    random_pair_images(folder, [(f"A0001_0{k}_00.bmp", "A0001.bmp") for k in range(4)], 64, 96, seed=1)
    random_pair_images(folder, [("A0002_00_00.bmp", "A0002.bmp")], 64, 96, seed=2)
    random_pair_images(folder, [(f"A0003_0{k}_00.bmp", "A0003.bmp") for k in range(3)], 96, 64, seed=3)
    pairs, problems = pair_paths(folder / "ref", folder / "dist")
    assert not problems and len(pairs) == 8
    return [pairs[i] for i in (0, 4, 5, 1, 2, 6, 3, 7)]  # A1 A2 A3 A1 A1 A3 A1 A3


class _CountingEncoder:
    """Wraps ``model.encode_reference`` to count the reference crops that go through the network."""

    def __init__(self, model):
        self.model, self.crops, self.calls = model, 0, 0
        self.original = model.encode_reference

    def __call__(self, ref):
        self.crops += len(ref)
        self.calls += 1
        return self.original(ref)


def _both_ways(model, pairs, monkeypatch, **kwargs):
    counter = _CountingEncoder(model)
    monkeypatch.setattr(model, "encode_reference", counter)
    reused = list(score_pairs(model, pairs, progress=False, **kwargs))
    monkeypatch.undo()
    plain = list(score_pairs(model, pairs, progress=False, reuse_reference=False, **kwargs))
    return reused, plain, counter


@pytest.mark.parametrize("crops", ["center", "five", "grid:4", "random:3"])
def test_reuse_equals_pair_by_pair(small_model, several_references, monkeypatch, crops):
    pairs = several_references
    reused, plain, counter = _both_ways(small_model, pairs, monkeypatch, crops=crops, crop_size=32, batch_size=3)
    assert [(r.dist, r.ref) for r in reused] == pairs == [(r.dist, r.ref) for r in plain]  # the given order
    for a, b in zip(reused, plain):
        assert len(a.crop_scores) == len(b.crop_scores) == len(crop_positions(crops, 64, 96, 32, seed=SEED))
        assert max(abs(x - y) for x, y in zip(a.crop_scores, b.crop_scores)) <= 1e-6
        assert abs(a.score - b.score) <= 1e-6
    assert len({round(r.score, 5) for r in plain}) == len(pairs)  # distinct pairs, distinct scores
    # each of the 3 references through the network once, though batches of 3 split A0001's 4 images
    assert counter.crops == 3 * len(crop_positions(crops, 64, 96, 32, seed=SEED))


def test_reuse_with_maps_flip_and_one_image_per_batch(small_model, several_references, monkeypatch):
    pairs = several_references[:4]
    reused, plain, counter = _both_ways(small_model, pairs, monkeypatch, crops="five", crop_size=32, batch_size=1,
                                        with_maps=True, flip_tta=True)
    assert counter.crops == 3 * 5 * 2  # crops and mirrors of each reference, once (in batches of one crop)
    for a, b in zip(reused, plain):
        assert (a.dist, a.ref) == (b.dist, b.ref) and abs(a.score - b.score) <= 1e-6
        assert a.score_map.shape == b.score_map.shape and a.score_map.size == 64 * 96
        # NaN where no crop covered the image (the five 32-pixel crops leave parts of 64x96 uncovered), in both
        np.testing.assert_allclose(a.score_map, b.score_map, rtol=0, atol=1e-5)
        np.testing.assert_allclose(a.weight_map, b.weight_map, rtol=0, atol=1e-5)
        assert np.isnan(a.score_map).any() and not np.isnan(a.score_map).all()


def test_reuse_on_real_images(small_model, monkeypatch, tmp_path):
    """The real KADID-10k subset (1 reference, 4 distorted 512x384 images) when present, generated otherwise."""
    mini = SHARED / "data" / "mini" / "KADID-10k-mini" / "images"
    if mini.is_dir():
        pairs = pair_paths(mini, mini)[0]
    else:
        random_pair_images(tmp_path, [(f"I01_0{k}_01.png", "I01.png") for k in range(1, 5)], 384, 512)
        pairs = pair_paths(tmp_path / "ref", tmp_path / "dist")[0]
    assert len(pairs) == 4
    reused, plain, counter = _both_ways(small_model, pairs, monkeypatch, crops="five", crop_size=64, batch_size=3)
    assert counter.crops == 5
    assert max(abs(a.score - b.score) for a, b in zip(reused, plain)) <= 1e-6
    assert len({round(r.score, 4) for r in reused}) == 4


def test_reference_order_groups_by_first_appearance():
    pairs = [("d1", "B"), ("d2", "A"), ("d3", "B"), ("d4", "C"), ("d5", "A")]
    assert reference_order(pairs) == [0, 2, 1, 4, 3]


def test_size_mismatch_is_found_with_a_reused_reference(small_model, several_references):
    dist, ref = several_references[0]
    other = several_references[2][0]  # a 96x64 image against A0001's 64x96 reference, decoded in an earlier batch
    with pytest.raises(UserError, match=f"{other.name}: size differs from its reference"):
        list(score_pairs(small_model, [(dist, ref), (other, ref)], crop_size=32, batch_size=1, progress=False))


def test_crop_planner_windows_scores_and_maps(small_model):
    """The planner every entry point shares: mirrored windows, a window placed twice counted twice, maps pasted."""
    planner = CropPlanner("five", 32, flip_tta=True).for_model(small_model)
    windows = planner.windows(32, 64)  # five on 32x64: left and right corners twice each, the centre once
    assert windows[::2] == [(0, 0, 2, False), (0, 32, 2, False), (0, 16, 1, False)]
    assert windows[1::2] == [(0, 0, 2, True), (0, 32, 2, True), (0, 16, 1, True)]
    assert CropPlanner("five", 32).windows(32, 32) == [(0, 0, 5, False)]
    assert CropPlanner("five").for_model(small_model).crop == 224  # no crop recorded: the authors'

    scores = torch.tensor([1.0, 3.0, 5.0, 5.0, 0.0, 1.0])  # window, mirror, ...
    torch.testing.assert_close(planner.crop_scores(scores, windows), torch.tensor([2.0, 2.0, 5.0, 5.0, 0.5]))
    image = torch.arange(3 * 32 * 64.0).reshape(3, 32, 64)
    crops = planner.cut(image[None], [windows])
    assert crops.shape == (6, 3, 32, 32) and torch.equal(crops[1], image[:, :, :32].flip(-1))
    maps = torch.tensor([1.0, 3.0, 2.0]).reshape(3, 1, 1, 1)  # the unmirrored windows' maps
    pasted = planner.paste(maps, windows, 32, 80, fill=float("nan"))
    torch.testing.assert_close(pasted[0, [0, 16, 56]], torch.tensor([1.0, (2 * 1 + 2) / 3, 3.0]))
    assert pasted[:, 64:].isnan().all() and not pasted[:, :64].isnan().any()
    with pytest.raises(UserError, match="crop_size=100: must be a positive multiple of 32"):
        CropPlanner("five", 100)
    with pytest.raises(UserError, match="precision=fp16: use one of fp32, bf16"):
        CropPlanner("five", precision="fp16")
