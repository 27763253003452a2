"""Metrics against known vectors."""
from __future__ import annotations

import math

import numpy as np
import pytest

from utils.metrics import format_metrics, iqa_metrics


def test_known_vectors():
    m = iqa_metrics([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert m["SRCC"] == pytest.approx(1) and m["PLCC"] == pytest.approx(1) and m["KRCC"] == pytest.approx(1)
    assert m["RMSE"] == pytest.approx(math.sqrt(np.mean(np.arange(1, 6) ** 2)))
    assert m["main"] == pytest.approx(2)
    m = iqa_metrics([1, 2, 3, 4], [4, 3, 2, 1])
    assert m["SRCC"] == pytest.approx(-1) and m["KRCC"] == pytest.approx(-1)
    # one swapped pair out of 6: Kendall (5 - 1) / 6, Spearman 1 - 6 * 2 / (4 * 15)
    m = iqa_metrics([1, 2, 4, 3], [1, 2, 3, 4])
    assert m["KRCC"] == pytest.approx(4 / 6) and m["SRCC"] == pytest.approx(0.8)
    assert m["PLCC"] == pytest.approx(0.8)
    m = iqa_metrics([0.1, 0.4, 0.35, 0.8], [0.0, 0.5, 0.3, 1.0])
    assert m["PLCC"] == pytest.approx(0.99215, abs=1e-5)


def test_undefined_correlations_are_nan():
    m = iqa_metrics([1, 1, 1], [1, 2, 3])
    assert math.isnan(m["SRCC"]) and math.isnan(m["PLCC"]) and m["RMSE"] == pytest.approx(math.sqrt(5 / 3))
    assert "SRCC=nan" in format_metrics(m)
    with pytest.raises(ValueError):
        iqa_metrics([1, 2], [1, 2, 3])
