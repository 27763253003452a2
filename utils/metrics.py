"""Correlation metrics of IQA: SRCC, PLCC, KRCC, RMSE, NTIRE's main score (SRCC + PLCC), and PLCC / RMSE after a
monotonic logistic mapping (VQEG's practice; spec §8), each missing figure with its reason."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats

LABELS = {"SRCC": "SRCC", "PLCC": "PLCC", "KRCC": "KRCC", "PLCC_fitted": "PLCC(fitted)",
          "RMSE_fitted": "RMSE(fitted)", "RMSE": "RMSE", "main": "main"}
# The steepest logistic the constrained fits consider, per standard deviation of the predictions: 50 is a step over
# 1/50 of their spread; steeper ones only make the least-squares search crawl towards a step.
MAX_STEEPNESS = 50.0
MIN_FIT_PAIRS = 5  # the logistic has 5 parameters: fewer pairs than that fit it exactly, saying nothing


def logistic5(x, b1: float, b2: float, b3: float, b4: float, b5: float):
    """``q(x) = b1 * (1/2 - 1/(1 + exp(b2 * (x - b3)))) + b4 * x + b5``, VQEG's mapping of predictions to labels."""
    x = np.asarray(x, dtype=np.float64)
    z = np.clip(b2 * (x - b3), -500, 500)  # no exp overflow far from b3
    return b1 * (0.5 - 1.0 / (1.0 + np.exp(z))) + b4 * x + b5


def _bump(z):
    """``s (1 - s)`` with ``s = sigmoid(z)``: the logistic's slope factor, at most 1/4 (at z = 0)."""
    e = np.exp(-np.abs(np.clip(z, -500, 500)))
    return e / (1.0 + e) ** 2


def min_slope(params, lo: float, hi: float) -> float:
    """The smallest derivative ``b1 b2 s(1 - s) + b4`` of :func:`logistic5` on ``[lo, hi]``, exactly."""
    b1, b2, b3, b4, _ = (float(v) for v in params)
    c = b1 * b2
    near = b2 * (min(max(b3, lo), hi) - b3)
    far = b2 * (max(abs(lo - b3), abs(hi - b3)))
    return c * float(_bump(far if c >= 0 else near)) + b4


@dataclass(frozen=True)
class LogisticFit:
    """A monotonic mapping of predictions onto labels: ``form`` (``logistic5``, ``logistic4`` or ``line``) and
    :func:`logistic5`'s ``(b1..b5)``; calling it maps predictions."""

    form: str
    params: np.ndarray = field(repr=False)

    def __call__(self, x) -> np.ndarray:
        return logistic5(x, *self.params)


def _jacobian(x, b1, b2, b3, b4, b5) -> np.ndarray:
    """``d logistic5 / d(b1..b5)`` at ``x``, ``(N, 5)``."""
    z = np.clip(b2 * (x - b3), -500, 500)
    s = 1.0 / (1.0 + np.exp(-z))
    slope = b1 * s * (1.0 - s)
    return np.stack([s - 0.5, slope * (x - b3), -slope * b2, x, np.ones_like(x)], axis=1)


def _sse(params, x, y) -> float:
    return float(np.sum((logistic5(x, *params) - y) ** 2))


def _curve_fit(f, x: np.ndarray, y: np.ndarray, **kw) -> np.ndarray | None:
    """``optimize.curve_fit``'s parameters, or None where it found none."""
    try:
        return optimize.curve_fit(f, x, y, **kw)[0]
    except (RuntimeError, ValueError, optimize.OptimizeWarning):
        return None


def _monotone_fit(x: np.ndarray, y: np.ndarray, slope: float) -> tuple[str, np.ndarray]:
    """``(form, params)`` of the least-squares non-decreasing logistic of standardised ``x`` onto ``y``: the 5-parameter
    form (free, then with q' >= 0 on the data's range), else the 4-parameter form, else the line ``slope * x``."""
    lo, hi = float(x.min()), float(x.max())
    tol = 1e-9
    best = ("line", np.array([0.0, 1.0, 0.0, slope, 0.0]))
    best_sse = _sse(best[1], x, y) * (1 + 1e-12)
    spread = max(float(np.ptp(y)), 1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the classic free fit (kept only when it is monotonic on the data), then b1, b2, b4 >= 0: non-decreasing
        # everywhere (a start inside the constraint for the refinement)
        fits = [_curve_fit(logistic5, x, y, p0=[spread, 1.0, 0.0, 0.0, 0.0], jac=_jacobian, maxfev=2000),
                _curve_fit(logistic5, x, y, p0=[spread, 1.0, 0.0, 1e-3, 0.0], jac=_jacobian, max_nfev=500,
                           bounds=([0.0, 0.0, -np.inf, 0.0, -np.inf], [np.inf, MAX_STEEPNESS, np.inf, np.inf, np.inf]))]
        candidates = [p for p in fits if p is not None]
        grid = np.linspace(lo, hi, 64)
        constraint = {"type": "ineq", "fun": lambda b: b[0] * b[1] * _bump(b[1] * (grid - b[2])) + b[3]}
        for start in list(candidates):
            if np.all(np.isfinite(start)) and min_slope(start, lo, hi) < -tol:
                start = np.array([abs(start[0]), abs(start[1]), start[2], max(start[3], 0.0), start[4]])
            start = np.array([start[0], np.clip(start[1], -MAX_STEEPNESS, MAX_STEEPNESS), *start[2:]])
            if not np.all(np.isfinite(start)):
                continue
            found = optimize.minimize(_sse, start, args=(x, y), method="SLSQP",
                                      jac=lambda b, x, y: 2.0 * _jacobian(x, *b).T @ (logistic5(x, *b) - y),
                                      bounds=[(None, None), (-MAX_STEEPNESS, MAX_STEEPNESS)] + [(None, None)] * 3,
                                      constraints=[constraint], options={"maxiter": 300, "ftol": 1e-12})
            candidates.append(found.x)
        for params in candidates:
            if np.all(np.isfinite(params)) and min_slope(params, lo, hi) >= -tol and _sse(params, x, y) < best_sse:
                best, best_sse = ("logistic5", np.asarray(params, dtype=np.float64)), _sse(params, x, y)
        if best[0] == "logistic5":
            return best
        # no monotonic 5-parameter fit better than the line: the 4-parameter form (b4 = 0)
        four = _curve_fit(lambda t, b1, b2, b3, b5: logistic5(t, b1, b2, b3, 0.0, b5), x, y,
                          p0=[spread, 1.0, 0.0, 0.0], max_nfev=500,
                          jac=lambda t, b1, b2, b3, b5: _jacobian(t, b1, b2, b3, 0.0, b5)[:, [0, 1, 2, 4]],
                          bounds=([0.0, 0.0, -np.inf, -np.inf], [np.inf, MAX_STEEPNESS, np.inf, np.inf]))
        params = None if four is None else np.array([four[0], four[1], four[2], 0.0, four[3]])
        if params is not None and np.all(np.isfinite(params)) and _sse(params, x, y) < best_sse:
            return "logistic4", params
    return best


def fit_logistic(pred, target) -> LogisticFit:
    """The least-squares monotonic logistic mapping ``pred`` onto ``target``, fitted on standardised data."""
    x = np.asarray(pred, dtype=np.float64).ravel()
    y = np.asarray(target, dtype=np.float64).ravel()
    mx, sx, my, sy = float(np.mean(x)), float(np.std(x)), float(np.mean(y)), float(np.std(y))
    if not (sx > 0 and sy > 0):
        return LogisticFit("line", np.array([0.0, 1.0, mx, 0.0, my]))
    xs, ys = (x - mx) / sx, (y - my) / sy
    slope = float(np.mean(xs * ys))  # least-squares line of standardised data: slope = correlation, intercept 0
    sign = -1.0 if slope < 0 else 1.0  # fit a non-decreasing curve to sign * labels
    form, (b1, b2, b3, b4, b5) = _monotone_fit(xs, sign * ys, abs(slope))
    b1, b4, b5 = sign * b1, sign * b4, sign * b5
    return LogisticFit(form, np.array([sy * b1, b2 / sx, mx + sx * b3, sy * b4 / sx, sy * (b5 - b4 * mx / sx) + my]))


def fit_logistic5(pred, target) -> np.ndarray:
    return fit_logistic(pred, target).params


@dataclass
class Evaluation:
    """Predictions against labels: ``metrics`` (NaN where undefined), ``why`` each NaN, and ``fit``."""

    metrics: dict[str, float]
    why: dict[str, str]
    fit: LogisticFit | None

    def notes(self) -> dict[str, str]:
        return {**self.why, **({"fit": self.fit.form} if self.fit else {})}


def why_undefined(pred: np.ndarray, target: np.ndarray) -> str | None:
    """Why correlations of ``pred`` and ``target`` are undefined (fewer than 2 pairs, a constant side), or None."""
    if pred.size < 2:
        return f"n={pred.size}<2"
    if np.ptp(pred) == 0:
        return "constant predictions"
    return "constant labels" if np.ptp(target) == 0 else None


def evaluate(pred, target, same_scale: bool = True) -> Evaluation:
    """SRCC, PLCC, KRCC, PLCC/RMSE after :func:`fit_logistic` (5 or more pairs), RMSE (NaN, ``other scale``, unless
    ``same_scale``) and main = SRCC + PLCC."""
    pred = np.asarray(pred, dtype=np.float64).ravel()
    target = np.asarray(target, dtype=np.float64).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"{pred.size} predictions for {target.size} labels")
    srcc = plcc = krcc = plcc_fit = rmse_fit = math.nan
    fit = None
    why: dict[str, str] = {}
    reason = why_undefined(pred, target)
    if reason is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            srcc = float(stats.spearmanr(pred, target)[0])
            plcc = float(stats.pearsonr(pred, target)[0])
            krcc = float(stats.kendalltau(pred, target)[0])
            if pred.size >= MIN_FIT_PAIRS:
                fit = fit_logistic(pred, target)
                mapped = fit(pred)
                plcc_fit = float(stats.pearsonr(mapped, target)[0]) if np.ptp(mapped) > 0 else math.nan
                rmse_fit = float(np.sqrt(np.mean((mapped - target) ** 2)))
                if math.isnan(plcc_fit):
                    why["PLCC_fitted"] = "flat fit"
    rmse = float(np.sqrt(np.mean((pred - target) ** 2))) if pred.size and same_scale else math.nan
    metrics = {"SRCC": srcc, "PLCC": plcc, "KRCC": krcc, "PLCC_fitted": plcc_fit, "RMSE_fitted": rmse_fit,
               "RMSE": rmse, "main": srcc + plcc}
    for key, value in metrics.items():
        if math.isnan(value) and key not in why:
            if key == "RMSE":
                why[key] = "other scale" if pred.size else "n=0"
            elif reason:
                why[key] = reason
            else:  # only the fitted figures remain
                why[key] = f"n={pred.size}<{MIN_FIT_PAIRS}" if pred.size < MIN_FIT_PAIRS else "undefined"
    return Evaluation(metrics, why, fit)


def iqa_metrics(pred, target, same_scale: bool = True) -> dict[str, float]:
    return evaluate(pred, target, same_scale).metrics


def figure(value: float, why: str | None = None, digits: int = 4) -> str:
    """A figure with ``digits`` decimals or, where missing, its reason (``n/a (n=4<5)``), never a bare ``nan``."""
    if value == value:
        return f"{value:.{digits}f}"
    return f"n/a ({why})" if why else "n/a"


def format_metrics(m: dict[str, float], notes: dict[str, str] | None = None) -> str:
    """``SRCC=… PLCC=… … main=…``, a missing figure as ``n/a(<reason>)`` from ``notes``; RMSE left out on another scale."""
    notes = notes or {}
    words = []
    for key in LABELS:
        if key not in m or (key == "RMSE" and math.isnan(m[key]) and notes.get(key, "other scale") == "other scale"):
            continue
        why = notes.get(key)
        value = figure(m[key]) if m[key] == m[key] or not why else f"n/a({why.replace(' ', '_')})"
        words.append(f"{LABELS[key]}={value}")
        if key == "RMSE_fitted" and notes.get("fit"):
            words.append(f"fit={notes['fit']}")
    return " ".join(words)
