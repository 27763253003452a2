"""Crop protocols: positions for each protocol, reaching the last row/column, exact-size images."""
from __future__ import annotations

import pytest

from ahiq.data.crops import crop_positions, parse_crops
from ahiq.models.config import SEED
from ahiq.utils.errors import UserError


def test_center_five_nine_positions_follow_the_authors():
    h, w, c = 288, 300, 224
    assert crop_positions("center", h, w, c) == [(32, 38)]
    assert crop_positions("five", h, w, c) == [(0, 0), (0, 76), (64, 0), (64, 76), (32, 38)]
    assert crop_positions("nine", h, w, c) == [(0, 0), (0, 76), (64, 0), (64, 76), (32, 38),
                                                (32, 0), (32, 76), (0, 38), (64, 38)]


def test_random_is_seeded_and_reaches_last_row_and_column():
    a = crop_positions("random:2000", 230, 227, 224, seed=SEED)
    assert a == crop_positions("random:2000", 230, 227, 224, seed=SEED)
    assert a[:20] != crop_positions("random:20", 230, 227, 224, seed=7)
    tops, lefts = {t for t, _ in a}, {left for _, left in a}
    assert tops == set(range(7)) and lefts == set(range(4))  # 0..h-c inclusive, unlike randint(0, h - c)
    assert len(crop_positions("random:20", 288, 288, 224, seed=SEED)) == 20
    assert crop_positions("random:3", 288, 288, 224, draw=lambda high, n: [high - 1] * n) == [(64, 64)] * 3
    with pytest.raises(ValueError, match="random crops need a seed"):
        crop_positions("random:20", 288, 288, 224)


def test_grid_is_uniform_and_spans_the_image():
    pos = crop_positions("grid:20", 288, 384, 224)
    assert len(pos) == 20
    assert sorted({t for t, _ in pos}) == [0, 21, 43, 64]
    assert sorted({left for _, left in pos}) == [0, 40, 80, 120, 160]
    assert crop_positions("grid:9", 300, 300, 100) == [(t, left) for t in (0, 100, 200) for left in (0, 100, 200)]
    assert crop_positions("grid:1", 300, 260, 100) == [(100, 80)]


@pytest.mark.parametrize("spec", ["center", "five", "nine", "random:5", "grid:4"])
def test_image_exactly_the_crop_size(spec):
    assert set(crop_positions(spec, 224, 224, 224, seed=SEED)) == {(0, 0)}


@pytest.mark.parametrize("spec", ["six", "random", "random:0", "grid:x", "five:3"])
def test_bad_protocols_are_user_errors(spec):
    with pytest.raises(UserError, match="crops="):
        parse_crops(spec)


def test_image_smaller_than_crop():
    with pytest.raises(UserError, match="smaller than the 224x224 crop"):
        crop_positions("center", 200, 300, 224)
