"""Metrics against known vectors."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ahiq.utils.metrics import format_metrics, iqa_metrics


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


def test_logistic_fit_recovers_a_known_mapping():
    from ahiq.utils.metrics import fit_logistic5, logistic5

    x = np.linspace(-2, 3, 40)
    truth = (4.0, 2.5, 0.4, 0.3, 3.0)
    y = logistic5(x, *truth)
    params = fit_logistic5(x, y)
    assert np.max(np.abs(logistic5(x, *params) - y)) < 1e-6
    m = iqa_metrics(x, y)
    assert m["PLCC_fitted"] == pytest.approx(1, abs=1e-9) and m["RMSE_fitted"] == pytest.approx(0, abs=1e-6)
    assert m["PLCC"] < 0.99  # the plain PLCC sees the nonlinearity


def test_logistic_fit_matches_a_reference_least_squares():
    """Noisy vectors on another scale: our fit reaches the least-squares optimum that an independent solver
    (Nelder-Mead from the true parameters, many iterations) finds, and PLCC/RMSE(fitted) follow from it."""
    from scipy import optimize, stats

    from ahiq.utils.metrics import fit_logistic5, logistic5

    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, 60)                       # predictions on a 0..1 scale
    y = logistic5(x, 60.0, 9.0, 0.5, 5.0, 1200.0) + rng.normal(0, 4, x.size)   # labels on an Elo-like scale

    def sse(b):
        return float(np.sum((logistic5(x, *b) - y) ** 2))

    ref = optimize.minimize(sse, [60.0, 9.0, 0.5, 5.0, 1200.0], method="Nelder-Mead",
                            options={"maxiter": 40000, "maxfev": 40000, "xatol": 1e-10, "fatol": 1e-10}).x
    ours = fit_logistic5(x, y)
    assert sse(ours) <= sse(ref) * (1 + 1e-6)
    rmse_ref = math.sqrt(sse(ref) / x.size)
    plcc_ref = stats.pearsonr(logistic5(x, *ref), y)[0]
    m = iqa_metrics(x, y, same_scale=False)
    assert m["RMSE_fitted"] == pytest.approx(rmse_ref, rel=1e-5)
    assert m["PLCC_fitted"] == pytest.approx(plcc_ref, abs=1e-6)
    assert math.isnan(m["RMSE"]) and "RMSE=" not in format_metrics(m).replace("RMSE(fitted)=", "")
    assert "PLCC(fitted)=" in format_metrics(m) and m["SRCC"] == pytest.approx(stats.spearmanr(x, y)[0])


def test_fit_never_worse_than_a_line():
    from ahiq.utils.metrics import fit_logistic5, logistic5

    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    y = np.array([1.0, 3.0, 2.0, 5.0, 4.0, 6.0])
    params = fit_logistic5(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    assert np.sum((logistic5(x, *params) - y) ** 2) <= np.sum((slope * x + intercept - y) ** 2) + 1e-9


def test_fitted_figures_do_not_depend_on_the_scales():
    """The same predictions against labels in [0, 1] and on an Elo-like scale: PLCC(fitted) equal, RMSE(fitted)
    scaled by the labels' factor (validation compares normalised labels, test.py raw ones)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = np.tanh(2 * x) + rng.normal(0, 0.3, x.size)
    a = iqa_metrics(x, y)
    b = iqa_metrics(0.01 * x - 4, 1000 + 300 * y, same_scale=False)
    assert a["PLCC_fitted"] == pytest.approx(b["PLCC_fitted"], abs=1e-7)
    assert 300 * a["RMSE_fitted"] == pytest.approx(b["RMSE_fitted"], rel=1e-6)
