"""Pictures (matplotlib, no display): quality maps, label (x) vs prediction (y) scatter plots with the fitted logistic,
as in the AHIQ and PIPAL papers, and per-type SRCC bars."""
from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ahiq.utils.io import atomic_write
from ahiq.utils.metrics import LogisticFit


@functools.cache
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


UNCOVERED_COLOUR = "lightgrey"  # (211, 211, 211): areas no crop covered, not part of any colour scale


def robust_range(data: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """The ``low``-th and ``high``-th percentiles of the finite values, widened around a constant map."""
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [low, high]))
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5e-6 - abs(lo) * 1e-6, hi + 0.5e-6 + abs(hi) * 1e-6
    return lo, hi


def save_quality_map(image: np.ndarray, score_map: np.ndarray, weight_map: np.ndarray, path: str | Path,
                     title: str = "", name: str = "") -> Path:
    """Write ``path``: the image ``(H, W, 3)`` beside its maps f and w ``(H, W)``; NaN (uncovered) is light grey."""
    path = Path(path)
    fig, axes = _pyplot().subplots(1, 3, figsize=(14, 4.2), gridspec_kw={"wspace": 0.3})
    axes[0].imshow(image)
    axes[0].set_title(name)
    for ax, data, label, cmap_name in ((axes[1], score_map, "score map f", "RdYlGn"),
                                       (axes[2], weight_map, "weight map w", "magma")):
        cmap = _pyplot().matplotlib.colormaps[cmap_name].with_extremes(bad=UNCOVERED_COLOUR)
        lo, hi = robust_range(data)
        shown = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(f"{label} (colours: 1st-99th pct.)", fontsize=10)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    for ax in axes:
        ax.axis("off")
    uncovered = float(np.mean(~np.isfinite(score_map)))
    if uncovered > 0:
        title = f"{title}\ngrey: {100 * uncovered:.0f}% of the image no crop covered (no score there)".lstrip()
    fig.suptitle(title)
    _save_figure(fig, path)
    return path


def _draw_fit(ax, fit: LogisticFit | None, pred: np.ndarray, **style) -> None:
    if fit is None or pred.size == 0 or np.ptp(pred) == 0:
        return
    p = np.linspace(float(pred.min()), float(pred.max()), 200)
    ax.plot(fit(p), p, **{"color": "tab:red", "lw": 1.5, **style})


def save_scatter(pred, labels, caption: str, path: str | Path, label_name: str = "MOS",
                 pred_name: str = "AHIQ prediction", fit: LogisticFit | None = None) -> None:
    """Labels (x) against predictions (y), with ``fit`` when given and ``caption`` as the title."""
    pred = np.asarray(pred, dtype=np.float64)
    fig, ax = _pyplot().subplots(figsize=(5.5, 5), layout="constrained")
    ax.scatter(labels, pred, s=6, alpha=0.6)
    _draw_fit(ax, fit, pred)
    ax.set_xlabel(label_name)
    ax.set_ylabel(pred_name, wrap=True)
    ax.set_title(caption, fontsize=9)
    ax.grid(alpha=0.3)
    _save_figure(fig, Path(path))


@dataclass
class ScatterPanel:
    """One metric's panel: ``caption`` (first line beside the name), and per set ``preds`` and ``fits`` (None: none)."""

    metric: str
    caption: str
    preds: Sequence[np.ndarray]
    fits: Sequence[LogisticFit | None]


def save_fitted_scatter(panels: Sequence[ScatterPanel], labels: Sequence[np.ndarray], path: str | Path,
                        label_name: str = "MOS", title: str = "") -> None:
    """One panel per metric: every set's labels (x) against its predictions (y) and fitted logistic."""
    cols = min(len(panels), 4)
    rows = -(-len(panels) // cols)
    fig, axes = _pyplot().subplots(rows, cols, figsize=(4.4 * cols, 4.2 * rows + 0.4), squeeze=False, layout="constrained")
    several = len(labels) > 1
    for ax, panel in zip(axes.flat, panels):
        for y, pred, fit in zip(labels, panel.preds, panel.fits):
            pred = np.asarray(pred, dtype=np.float64)
            ax.scatter(np.asarray(y, dtype=np.float64), pred, s=6, alpha=0.5, color="tab:blue")
            _draw_fit(ax, fit, pred, lw=1.0 if several else 1.5, alpha=0.7 if several else 1.0)
        ax.set_xlabel(label_name, fontsize=9)
        ax.set_ylabel(f"{panel.metric} (higher = better)", fontsize=9)
        head, _, rest = panel.caption.partition("\n")
        ax.set_title(f"{panel.metric}{f' ({head})' if head else ''}\n{rest}".rstrip(), fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    _save_figure(fig, Path(path))


def save_type_bars(types: Sequence[str], srcc: dict[str, Sequence[float]], path: str | Path, title: str = "",
                   notes: Sequence[str | None] | None = None) -> None:
    """Bars of SRCC per distortion type and metric; a NaN draws no bar, its row's ``notes`` entry instead."""
    n, k = len(types), len(srcc)
    height = 0.8 / k
    notes = list(notes or [None] * n)
    fig, ax = _pyplot().subplots(figsize=(8, 1.2 + n * (0.25 + 0.1 * k)), layout="constrained")
    for j, (metric, values) in enumerate(srcc.items()):
        ax.barh(np.arange(n) + (j - (k - 1) / 2) * height, np.nan_to_num(np.asarray(values, dtype=float)),
                height=height, label=metric)
    for row, note in enumerate(notes):
        if note:
            ax.text(0.01, row, f"no SRCC: {note}", va="center", fontsize=7, color="dimgrey")
    ax.set_yticks(np.arange(n), list(types), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("SRCC")
    ax.set_xlim(float(np.nanmin([0.0, *(v for values in srcc.values() for v in values)])) - 0.02, 1.0)
    ax.axvline(0, color="black", lw=0.8)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title(title, fontsize=10, wrap=True)
    _save_figure(fig, Path(path))
