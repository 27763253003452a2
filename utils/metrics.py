"""Correlation metrics of IQA: SRCC, PLCC, KRCC, RMSE and NTIRE's main score (SRCC + PLCC)."""
from __future__ import annotations

import warnings

import numpy as np
from scipy import stats


def iqa_metrics(pred, target) -> dict[str, float]:
    """``{'SRCC', 'PLCC', 'KRCC', 'RMSE', 'main'}`` of predictions against labels (NaN when undefined)."""
    pred = np.asarray(pred, dtype=np.float64).ravel()
    target = np.asarray(target, dtype=np.float64).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"{pred.size} predictions for {target.size} labels")
    nan = float("nan")
    if pred.size < 2 or np.ptp(pred) == 0 or np.ptp(target) == 0:
        srcc = plcc = krcc = nan
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            srcc = float(stats.spearmanr(pred, target)[0])
            plcc = float(stats.pearsonr(pred, target)[0])
            krcc = float(stats.kendalltau(pred, target)[0])
    rmse = float(np.sqrt(np.mean((pred - target) ** 2))) if pred.size else nan
    return {"SRCC": srcc, "PLCC": plcc, "KRCC": krcc, "RMSE": rmse, "main": srcc + plcc}


def format_metrics(m: dict[str, float]) -> str:
    return " ".join(f"{k}={m[k]:.4f}" for k in ("SRCC", "PLCC", "KRCC", "RMSE", "main"))
