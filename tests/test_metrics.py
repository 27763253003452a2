"""Metrics against known vectors."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ahiq.utils.metrics import evaluate, format_metrics, iqa_metrics


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
    e = evaluate([1, 1, 1], [1, 2, 3])
    assert format_metrics(e.metrics, e.notes()).startswith("SRCC=n/a(constant_predictions) PLCC=n/a(")
    assert "nan" not in format_metrics(m) and e.fit is None
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


def test_missing_figures_say_why():
    """Four pairs: correlations, but no fit (5 parameters); one pair: nothing; labels on another scale: no RMSE."""
    e = evaluate([0.1, 0.2, 0.4, 0.3], [1.0, 2.0, 3.0, 4.0])
    assert e.why == {"PLCC_fitted": "n=4<5", "RMSE_fitted": "n=4<5"} and e.fit is None
    line = format_metrics(e.metrics, e.notes())
    assert line.startswith("SRCC=0.8000 PLCC=") and "PLCC(fitted)=n/a(n=4<5) RMSE(fitted)=n/a(n=4<5)" in line
    e = evaluate([3.0], [1.0], same_scale=False)
    assert set(e.why.values()) == {"n=1<2", "other scale"} and "RMSE=" not in format_metrics(e.metrics, e.notes())
    assert evaluate([1, 2, 3], [5, 5, 5]).why["SRCC"] == "constant labels"


def bends_back(seed: int = 0):
    """Labels that rise with the predictions over 60 % of their range, then fall a little: the free least-squares
    5-parameter logistic follows the fall."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0, 1, 40))
    y = np.where(x < 0.6, 1 + 4 * x / 0.6, 5 - 1.5 * (x - 0.6) / 0.4) + rng.normal(0, 0.1, x.size)
    return x, y


def test_fit_is_monotonic_where_the_free_fit_bends_back():
    from scipy import optimize

    from ahiq.utils.metrics import fit_logistic, logistic5, min_slope

    x, y = bends_back()
    free = optimize.curve_fit(logistic5, x, y, p0=[np.ptp(y), 1, np.mean(x), 0, np.mean(y)], maxfev=20000)[0]
    grid = np.linspace(x.min(), x.max(), 1000)
    assert np.diff(logistic5(grid, *free)).min() < -1e-3  # the unconstrained curve rises, then falls
    fit = fit_logistic(x, y)
    assert fit.form == "logistic5" and np.diff(fit(grid)).min() >= -1e-9
    assert min_slope(fit.params, x.min(), x.max()) >= -1e-9
    # the least-squares monotonic member: no worse than the line and the 4-parameter form (both monotonic)
    sse = np.sum((fit(x) - y) ** 2)
    slope, intercept = np.polyfit(x, y, 1)
    four = optimize.curve_fit(lambda t, a, b, c, d: logistic5(t, a, b, c, 0.0, d), x, y, p0=[4, 10, 0.3, 3],
                              bounds=([0, 0, -np.inf, -np.inf], np.inf), maxfev=20000)[0]
    assert sse <= np.sum((slope * x + intercept - y) ** 2)
    assert sse <= np.sum((logistic5(x, *four[:3], 0, four[3]) - y) ** 2) + 1e-9
    # the same data negated: the mirror image, decreasing, with the same PLCC(fitted)
    down = fit_logistic(x, -y)
    assert np.diff(down(grid)).max() <= 1e-9 and np.allclose(down(x), -fit(x), atol=1e-4)
    e = evaluate(x, y)
    assert e.fit.form == "logistic5" and "fit=logistic5" in format_metrics(e.metrics, e.notes())
    assert e.metrics["PLCC_fitted"] == pytest.approx(evaluate(x, -y).metrics["PLCC_fitted"], abs=1e-5)


def test_min_slope_is_the_smallest_derivative():
    from ahiq.utils.metrics import logistic5, min_slope

    rng = np.random.default_rng(5)
    for _ in range(200):
        params = rng.normal(size=5) * [3, 4, 1, 1, 1]
        lo, hi = sorted(rng.normal(size=2) * 2)
        grid = np.linspace(lo, hi, 20001)
        numeric = np.min(np.diff(logistic5(grid, *params)) / np.diff(grid))
        assert min_slope(params, lo, hi) == pytest.approx(numeric, abs=1e-3 * (1 + abs(params[0] * params[1])))
