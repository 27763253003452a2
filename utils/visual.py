"""Pictures: per-pair quality maps and prediction-vs-label scatter plots (matplotlib, no display needed)."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from data.images import read_image  # noqa: E402
from utils.io import atomic_write  # noqa: E402


def _save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


def save_quality_map(result, folder: str | Path) -> Path:
    """``<folder>/<dist stem>.png``: the distorted image, its patch score map f and weight map w
    (averaged over overlapping crops, at image resolution), colour bars, the score in the title."""
    path = Path(folder) / f"{Path(result.dist).stem}.png"
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    axes[0].imshow(read_image(result.dist))
    axes[0].set_title(Path(result.dist).name)
    for ax, data, title, cmap in ((axes[1], result.score_map, "score map f", "RdYlGn"),
                                  (axes[2], result.weight_map, "weight map w", "magma")):
        shown = ax.imshow(data, cmap=cmap)
        ax.set_title(title)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"AHIQ score {result.score:.4f}  (reference {Path(result.ref).name})")
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
