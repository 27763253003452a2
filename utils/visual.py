"""Pictures: per-pair quality maps and prediction-vs-label scatter plots (matplotlib, no display needed)."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import numpy as np  # noqa: E402
from utils.io import atomic_write  # noqa: E402


def _save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


def save_quality_map(image: np.ndarray, score_map: np.ndarray, weight_map: np.ndarray, path: str | Path,
                     title: str = "", name: str = "") -> Path:
    """Write ``path``: the image ``(H, W, 3)``, its patch score map f and weight map w ``(H, W)`` (at image
    resolution), with colour bars; ``title`` above, ``name`` over the image."""
    path = Path(path)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    axes[0].imshow(image)
    axes[0].set_title(name)
    for ax, data, label, cmap in ((axes[1], score_map, "score map f", "RdYlGn"),
                                  (axes[2], weight_map, "weight map w", "magma")):
        shown = ax.imshow(data, cmap=cmap)
        ax.set_title(label)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title)
    _save_figure(fig, path)
    return path


def save_scatter(pred, labels, metrics: dict, path: str | Path, label_name: str = "MOS") -> None:
    """Predictions against labels with SRCC/PLCC in the title."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(labels, pred, s=6, alpha=0.6)
    ax.set_xlabel(label_name)
    ax.set_ylabel("AHIQ prediction")
    ax.set_title(f"SRCC={metrics['SRCC']:.4f}  PLCC={metrics['PLCC']:.4f}  (n={len(pred)})")
    ax.grid(alpha=0.3)
    _save_figure(fig, Path(path))
