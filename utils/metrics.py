"""Correlation metrics of IQA: SRCC, PLCC, KRCC, RMSE, NTIRE's main score (SRCC + PLCC), and PLCC / RMSE after
the field's 5-parameter logistic mapping of predictions onto the label scale (VQEG; spec §8)."""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import optimize, stats

# Printed names of the metric keys; ``_fitted`` ones are computed after the logistic mapping.
LABELS = {"SRCC": "SRCC", "PLCC": "PLCC", "KRCC": "KRCC", "PLCC_fitted": "PLCC(fitted)",
          "RMSE_fitted": "RMSE(fitted)", "RMSE": "RMSE", "main": "main"}


def logistic5(x, b1: float, b2: float, b3: float, b4: float, b5: float):
    """``q(x) = b1 * (1/2 - 1/(1 + exp(b2 * (x - b3)))) + b4 * x + b5``: the VQEG mapping of predictions to labels."""
    x = np.asarray(x, dtype=np.float64)
    z = np.clip(b2 * (x - b3), -500, 500)  # no exp overflow far from b3
    return b1 * (0.5 - 1.0 / (1.0 + np.exp(z))) + b4 * x + b5


def fit_logistic5(pred, target) -> np.ndarray:
    """Least-squares parameters ``(b1..b5)`` of :func:`logistic5` mapping ``pred`` onto ``target``.

    The fit runs on standardised predictions and labels (so it finds the same mapping whatever scale either is
    on), from the usual starting values (b1 = range of the labels, b2 = 1/std of the predictions, b3 = their
    mean, b4 = 0, b5 = mean label); the parameters are returned for the original scales. Where the fit does not
    converge, or ends worse than a straight line (b1 = 0, a member of the same family), the line is returned.
    """
    x = np.asarray(pred, dtype=np.float64).ravel()
    y = np.asarray(target, dtype=np.float64).ravel()
    mx, sx, my, sy = float(np.mean(x)), float(np.std(x)), float(np.mean(y)), float(np.std(y))
    xs, ys = (x - mx) / sx, (y - my) / sy
    slope = float(np.mean(xs * ys))  # least-squares line of standardised data: slope = correlation, intercept 0
    params = np.array([0.0, 1.0, 0.0, slope, 0.0])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted, _ = optimize.curve_fit(logistic5, xs, ys, p0=[float(np.ptp(ys)), 1.0, 0.0, 0.0, 0.0], maxfev=20000)
        if np.all(np.isfinite(fitted)) and np.sum((logistic5(xs, *fitted) - ys) ** 2) <= np.sum((slope * xs - ys) ** 2):
            params = fitted
    except (RuntimeError, ValueError, optimize.OptimizeWarning):
        pass
    b1, b2, b3, b4, b5 = params
    return np.array([sy * b1, b2 / sx, mx + sx * b3, sy * b4 / sx, sy * (b5 - b4 * mx / sx) + my])


def iqa_metrics(pred, target, same_scale: bool = True) -> dict[str, float]:
    """``{'SRCC', 'PLCC', 'KRCC', 'PLCC_fitted', 'RMSE_fitted', 'RMSE', 'main'}`` of predictions against labels.

    ``PLCC_fitted`` / ``RMSE_fitted``: after :func:`fit_logistic5` (needs 5 or more pairs). ``RMSE`` compares raw
    predictions with labels and is NaN when ``same_scale`` is False (predictions not on the labels' scale).
    NaN wherever undefined.
    """
    pred = np.asarray(pred, dtype=np.float64).ravel()
    target = np.asarray(target, dtype=np.float64).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"{pred.size} predictions for {target.size} labels")
    nan = float("nan")
    srcc = plcc = krcc = plcc_fit = rmse_fit = nan
    if pred.size >= 2 and np.ptp(pred) > 0 and np.ptp(target) > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            srcc = float(stats.spearmanr(pred, target)[0])
            plcc = float(stats.pearsonr(pred, target)[0])
            krcc = float(stats.kendalltau(pred, target)[0])
            if pred.size >= 5:
                mapped = logistic5(pred, *fit_logistic5(pred, target))
                plcc_fit = float(stats.pearsonr(mapped, target)[0]) if np.ptp(mapped) > 0 else nan
                rmse_fit = float(np.sqrt(np.mean((mapped - target) ** 2)))
    rmse = float(np.sqrt(np.mean((pred - target) ** 2))) if pred.size and same_scale else nan
    return {"SRCC": srcc, "PLCC": plcc, "KRCC": krcc, "PLCC_fitted": plcc_fit, "RMSE_fitted": rmse_fit,
            "RMSE": rmse, "main": srcc + plcc}


def format_metrics(m: dict[str, float]) -> str:
    """``SRCC=… PLCC=… KRCC=… PLCC(fitted)=… RMSE(fitted)=… RMSE=… main=…``; RMSE left out when not computed
    (predictions on another scale than the labels)."""
    keys = [k for k in LABELS if k in m and not (k == "RMSE" and math.isnan(m[k]))]
    return " ".join(f"{LABELS[k]}={m[k]:.4f}" for k in keys)
