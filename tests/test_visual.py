"""Pictures read as a reviewer reads them: one orientation (label on x, metric on y), no text over other text
at any number of panels (matplotlib's own text extents), titles that say what is drawn."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from ahiq.utils import visual
from ahiq.utils.metrics import fit_logistic


@pytest.fixture
def drawn(monkeypatch):
    """The figures the next pictures would write, drawn (layout done) instead of saved; :func:`checked` closes them."""
    figures = []

    def keep(fig, path):
        fig.canvas.draw()
        figures.append(fig)

    monkeypatch.setattr(visual, "_save_figure", keep)
    yield figures
    checked(figures)


def checked(figures: list) -> None:
    import matplotlib.pyplot as plt

    for fig in figures:
        plt.close(fig)
    figures.clear()


def overlapping_texts(fig) -> list[tuple[str, str]]:
    """Pairs of visible, non-empty texts of ``fig`` whose window extents intersect."""
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    hidden = set()  # labels of ticks outside the axis' view: matplotlib keeps them but does not draw them
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            slack = 1e-9 * max(1.0, hi - lo)
            hidden |= {id(t.label1) for t in axis.get_major_ticks() if not lo - slack <= t.get_loc() <= hi + slack}
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in hidden]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    return [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]


def scored_sets(metrics: int, sets: int, n: int = 30) -> list:
    """``sets`` scored sets of ``n`` pairs and ``metrics`` metrics (labels 1..5), two types, one of 3 pairs."""
    from ahiq.utils.comparison import ScoredSet

    rng = np.random.default_rng(metrics)
    out = []
    for _ in range(sets):
        y = rng.uniform(1, 5, n)
        types = ["01" if i < 3 else "11" for i in range(n)]
        scores = {f"METRIC{j}": np.tanh(y - 3) * (j + 1) + rng.normal(0, 0.3, n) for j in range(metrics)}
        out.append(ScoredSet([f"I01_{t}_{i}.png" for i, t in enumerate(types)], types, y, scores))
    return out


@pytest.mark.slow
def test_comparison_pictures_never_overlap_from_1_to_10_metrics(drawn, tmp_path):
    """Every number of metrics from 1 to 10, one set or three splits: no text box over another (titles, axis
    labels, tick labels, the figure title), the label on x and each metric on y, one fitted curve per set, and a
    title saying what is drawn."""
    from ahiq.data.distortions import TYPE_NAMES
    from ahiq.utils.comparison import comparison_report

    for k in range(1, 11):
        sets = scored_sets(k, 3 if k % 2 else 1)
        title = f"kadid10k ({len(sets)} splits, test parts)" if len(sets) > 1 else "kadid10k"
        comparison_report(sets, tmp_path / f"k{k}", title, TYPE_NAMES["kadid10k"], "dmos (1-5 ACR)")
        bars, scatter = drawn  # _types.png, then _scatter.png
        assert overlapping_texts(bars) == [] and overlapping_texts(scatter) == [], k
        assert any(t.get_text() == "no SRCC: 3 pairs, fewer than 5" for t in bars.axes[0].texts)
        axes = [ax for ax in scatter.axes if ax.axison]
        assert len(axes) == k
        for j, ax in enumerate(axes):  # subjective score on x, the metric on y
            assert ax.get_xlabel() == "dmos (1-5 ACR)" and ax.get_ylabel() == f"METRIC{j} (higher = better)"
            for s, points in zip(sets, ax.collections):
                offsets = points.get_offsets()
                assert np.allclose(offsets[:, 0], s.labels) and np.allclose(offsets[:, 1], s.scores[f"METRIC{j}"])
            assert len(ax.lines) == len(sets)  # one fitted curve per set
        expected = ("every split's pairs, n=90, one fitted curve per split" if len(sets) > 1 else "n=30")
        assert scatter.get_suptitle() == f"{title}: {expected}"
        checked(drawn)


def test_type_bars_and_single_scatter_have_no_overlaps(drawn, tmp_path):
    types = [f"{k:02d} a distortion type name" for k in range(1, 26)]
    srcc = {m: list(np.random.default_rng(j).uniform(-0.2, 1, 25)) for j, m in enumerate(["AHIQ", "PSNR", "SSIM"])}
    for values in srcc.values():
        values[3] = float("nan")
    notes = [None] * 25
    notes[3] = "2 pairs, fewer than 5"
    visual.save_type_bars(types, srcc, tmp_path / "t.png", "kadid10k (2 splits, test parts): SRCC per distortion "
                          "type (median over the splits)", notes)
    assert overlapping_texts(drawn[-1]) == []
    assert any(t.get_text() == "no SRCC: 2 pairs, fewer than 5" for t in drawn[-1].axes[0].texts)
    y = np.linspace(1, 5, 12)
    pred = y + np.sin(y)
    visual.save_scatter(pred, y, "n=12: SRCC=0.9 PLCC=0.9 PLCC(fitted)=0.95\nred: the fitted mapping, logistic5",
                        tmp_path / "p.png", "dmos (1-5 ACR)", "AHIQ prediction (network output)", fit_logistic(pred, y))
    fig = drawn[-1]
    assert overlapping_texts(fig) == []
    ax = fig.axes[0]
    assert ax.get_xlabel() == "dmos (1-5 ACR)" and np.allclose(ax.collections[0].get_offsets()[:, 0], y)
