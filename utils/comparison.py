"""AHIQ beside other metrics on the same pairs: the overall and per-distortion-type tables (markdown and CSV) and
their pictures, over one scored set or the test parts of several splits.

Every prediction is oriented higher = better, as every label (``Pair.score``): a metric where lower is better
is negated before it gets here, so a positive correlation always means agreement with the viewers.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import stats

from ahiq.utils.io import atomic_write_text
from ahiq.utils.metrics import LABELS, iqa_metrics
from ahiq.utils.tables import markdown_table, number, read_csv, write_csv

OVERALL = ("SRCC", "PLCC", "KRCC", "PLCC_fitted", "RMSE_fitted")
NO_TYPE = "(none)"


@dataclass
class ScoredSet:
    """One scored set: per pair its name, distortion type (None: unknown), label and each metric's prediction
    (``scores``: metric title -> array, AHIQ first), all oriented higher = better."""

    names: list[str]
    types: list[str | None]
    labels: np.ndarray
    scores: dict[str, np.ndarray]

    def write(self, path: str | os.PathLike) -> None:
        """``name,type,label,<metric>...``; numbers written exactly (``repr``), so :meth:`read` gives them back."""
        columns = [self.labels, *self.scores.values()]
        rows = ([n, t or "", *(repr(float(c[i])) for c in columns)] for i, (n, t) in enumerate(zip(self.names, self.types)))
        write_csv(path, ["name", "type", "label", *self.scores], rows)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "ScoredSet":
        header, *rows = read_csv(path)
        values = np.array([[float(v) for v in r[2:]] for r in rows], dtype=np.float64).reshape(len(rows), -1)
        return cls([r[0] for r in rows], [r[1] or None for r in rows], values[:, 0],
                   {m: values[:, k] for k, m in enumerate(header[3:], 1)})


def srcc(pred, labels) -> float:
    """Spearman's rank correlation (scipy); NaN for fewer than 2 pairs or a constant side."""
    pred, labels = np.asarray(pred, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if pred.size < 2 or np.ptp(pred) == 0 or np.ptp(labels) == 0:
        return math.nan
    return float(stats.spearmanr(pred, labels)[0])


def _pairs_cell(counts: Sequence[int]) -> str:
    return str(min(counts)) if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"


def _spread_cell(values: Sequence[float]) -> str:
    """One split: the value; several: ``median (mean ± std)`` (a NaN on any split stays NaN)."""
    if len(values) == 1:
        return number(values[0])
    return f"{number(float(np.median(values)))} ({number(float(np.mean(values)))} ± {number(float(np.std(values)))})"


def overall_rows(sets: Sequence[ScoredSet]) -> tuple[list[list], list[list]]:
    """Per metric, over the sets: (markdown rows ``metric, pairs, SRCC..RMSE(fitted)``, CSV rows ``metric, splits,
    pairs_min, pairs_max`` + median/mean/std of each metric). The logistic of the fitted columns is fitted per set,
    on that metric's own predictions."""
    md, table = [], []
    for metric in sets[0].scores:
        per_set = [iqa_metrics(s.scores[metric], s.labels) for s in sets]
        counts = [len(s.labels) for s in sets]
        values = {k: [m[k] for m in per_set] for k in OVERALL}
        md.append([metric, _pairs_cell(counts), *(_spread_cell(values[k]) for k in OVERALL)])
        table.append([metric, len(sets), min(counts), max(counts), *(
            number(f(values[k]), 6) for k in OVERALL for f in (np.median, np.mean, np.std))])
    return md, table


def type_rows(sets: Sequence[ScoredSet], type_names: dict[str, str]) -> list[list]:
    """Per distortion type (sorted by code), ``code, name, pairs`` and each metric's SRCC on that type's pairs
    (median over the sets), then ``all``. Empty when no pair has a type."""
    codes = sorted({t or NO_TYPE for s in sets for t in s.types})
    if codes == [NO_TYPE]:
        return []
    rows = []
    for code in [*codes, None]:
        picks = [np.array([code is None or (t or NO_TYPE) == code for t in s.types]) for s in sets]
        counts = [int(p.sum()) for p in picks]
        cells = [float(np.median([srcc(s.scores[m][p], s.labels[p]) for s, p in zip(sets, picks)]))
                 for m in sets[0].scores]
        rows.append([code or "all", type_names.get(code, "") if code else "all types", _pairs_cell(counts), *cells])
    return rows


def comparison_report(sets: Sequence[ScoredSet], prefix: str | os.PathLike, title: str,
                      type_names: dict[str, str] | None = None, label_name: str = "label") -> str:
    """Write ``<prefix>_comparison.md`` (both tables), ``_comparison.csv``, ``_types.csv``, ``_scatter.png``
    (of the first set) and ``_types.png``; return the markdown."""
    from ahiq.utils.visual import save_fitted_scatter, save_type_bars

    prefix, metrics, several = Path(prefix), list(sets[0].scores), len(sets) > 1
    out = lambda suffix: prefix.with_name(prefix.name + suffix)
    md, table = overall_rows(sets)
    text = markdown_table(["metric", "pairs", *(LABELS[k] for k in OVERALL)], md, f"{title}: every metric on the same "
                          f"pairs ({f'{len(sets)} splits, median (mean ± std)' if several else 'one set'}; predictions "
                          "oriented higher = better)")
    write_csv(out("_comparison.csv"), ["metric", "splits", "pairs_min", "pairs_max",
                                       *(f"{k}_{s}" for k in OVERALL for s in ("median", "mean", "std"))], table)
    types = type_rows(sets, type_names or {})
    if types:
        heading = f"{title}: SRCC per distortion type" + (" (median over the splits)" if several else "")
        text += "\n" + markdown_table(["type", "name", "pairs", *metrics],
                                      [[*r[:3], *(number(v) for v in r[3:])] for r in types], heading)
        write_csv(out("_types.csv"), ["type", "name", "pairs", *metrics],
                  [[*r[:3], *(number(v, 6) for v in r[3:])] for r in types])
        save_type_bars([f"{r[0]} {r[1]}".strip() for r in types[:-1]],
                       {m: [r[3 + k] for r in types[:-1]] for k, m in enumerate(metrics)}, out("_types.png"), heading)
    else:
        text += "\nno distortion types known for these pairs (no per-type table)\n"
    first = sets[0]
    save_fitted_scatter([(m, first.scores[m], iqa_metrics(first.scores[m], first.labels)) for m in metrics],
                        first.labels, out("_scatter.png"), label_name,
                        f"{title}{' (split 0)' if several else ''}, n={len(first.labels)}")
    atomic_write_text(out("_comparison.md"), text)
    return text
