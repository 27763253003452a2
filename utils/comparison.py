"""AHIQ beside other metrics on the same pairs: overall and per-distortion-type tables and pictures, over one scored
set or several splits. Predictions are oriented higher = better (a lower-is-better metric is negated before)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import stats

from ahiq.utils.io import atomic_write_text
from ahiq.utils.metrics import LABELS, Evaluation, evaluate, figure, why_undefined
from ahiq.utils.tables import markdown_table, read_csv, write_csv

OVERALL = ("SRCC", "PLCC", "KRCC", "PLCC_fitted", "RMSE_fitted")
NO_TYPE = "(none)"
TYPE_MIN_PAIRS = 5  # a correlation over fewer pairs says little: such a type shows its count, not a figure


@dataclass
class ScoredSet:
    """Per pair: name, distortion type (None: unknown), label and each metric's prediction (AHIQ first)."""

    names: list[str]
    types: list[str | None]
    labels: np.ndarray
    scores: dict[str, np.ndarray]

    def write(self, path: str | os.PathLike) -> None:
        """``name,type,label,<metric>...``, numbers exactly (``repr``), as :meth:`read` takes them."""
        columns = [self.labels, *self.scores.values()]
        rows = ([n, t or "", *(repr(float(c[i])) for c in columns)] for i, (n, t) in enumerate(zip(self.names, self.types)))
        write_csv(path, ["name", "type", "label", *self.scores], rows)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "ScoredSet":
        header, *rows = read_csv(path)
        values = np.array([[float(v) for v in r[2:]] for r in rows], dtype=np.float64).reshape(len(rows), -1)
        return cls([r[0] for r in rows], [r[1] or None for r in rows], values[:, 0],
                   {m: values[:, k] for k, m in enumerate(header[3:], 1)})


def _srcc(pred: np.ndarray, labels: np.ndarray) -> tuple[float, str | None]:
    """Spearman's rank correlation (scipy), and why where it is undefined (NaN)."""
    why = why_undefined(pred, labels)
    return (math.nan, why) if why else (float(stats.spearmanr(pred, labels)[0]), None)


def _pairs_cell(counts: Sequence[int]) -> str:
    return str(min(counts)) if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"


def _missing(whys: Sequence[str | None], n_sets: int) -> str:
    found = [w for w in whys if w is not None]
    reasons = ", ".join(dict.fromkeys(found))
    return f"n/a ({reasons})" if len(found) == n_sets else f"n/a ({reasons} on {len(found)} of {n_sets} splits)"


def spread_cells(values: Sequence[float], whys: Sequence[str | None], digits: int = 4) -> tuple[str, str, str, str]:
    """(markdown cell, median, mean, std) of one figure over the sets (cell: ``median (mean ± std)``); missing on any
    set, its reasons (``whys``) in every cell."""
    if any(w is not None for w in whys):
        return (_missing(whys, len(values)),) * 4
    med, mean, std = (float(f(values)) for f in (np.median, np.mean, np.std))
    md = figure(values[0]) if len(values) == 1 else f"{figure(med)} ({figure(mean)} ± {figure(std)})"
    return md, figure(med, digits=digits), figure(mean, digits=digits), figure(std, digits=digits)


def fit_cell(forms: Sequence[str | None], whys: Sequence[str | None] = ()) -> str:
    """The fitted forms over the sets: ``logistic5``, or ``logistic5 x2, logistic4 x1``; none: the reasons (``whys``)."""
    found = [f for f in forms if f]
    if not found:
        return _missing([w or "undefined" for w in (whys or [None] * len(forms))], len(forms))
    counts = {f: found.count(f) for f in dict.fromkeys(found)}
    if len(counts) == 1 and len(found) == len(forms):
        return found[0]
    return ", ".join(f"{f} x{c}" for f, c in counts.items()) + (
        f", none x{len(forms) - len(found)}" if len(found) < len(forms) else "")


def _fit_cell(evaluations: Sequence[Evaluation]) -> str:
    return fit_cell([e.fit.form if e.fit else None for e in evaluations],
                    [e.why.get("PLCC_fitted") for e in evaluations])


def evaluations(sets: Sequence[ScoredSet]) -> dict[str, list[Evaluation]]:
    return {metric: [evaluate(s.scores[metric], s.labels) for s in sets] for metric in sets[0].scores}


def overall_rows(sets: Sequence[ScoredSet], found: dict[str, list[Evaluation]] | None = None
                 ) -> tuple[list[list], list[list]]:
    """Per metric over the sets: (markdown rows, CSV rows with the median/mean/std of each figure)."""
    found = found or evaluations(sets)
    md, table = [], []
    counts = [len(s.labels) for s in sets]
    for metric, per_set in found.items():
        cells = {k: spread_cells([e.metrics[k] for e in per_set], [e.why.get(k) for e in per_set], 6) for k in OVERALL}
        md.append([metric, _pairs_cell(counts), *(cells[k][0] for k in OVERALL), _fit_cell(per_set)])
        table.append([metric, len(sets), min(counts), max(counts), *(c for k in OVERALL for c in cells[k][1:]),
                      _fit_cell(per_set)])
    return md, table


def too_few(min_pairs: int) -> str:
    """The cell of a type with fewer than ``min_pairs`` pairs (written by :func:`type_rows`, read for the bars' notes)."""
    return f"n/a (n<{min_pairs})"


def type_rows(sets: Sequence[ScoredSet], type_names: dict[str, str],
              min_pairs: int = TYPE_MIN_PAIRS) -> list[list]:
    """Per distortion type, then ``all``: ``code, name, pairs`` and each metric's median SRCC over the sets (``n/a
    (n<min_pairs)`` for too few pairs). Empty when no pair has a type."""
    codes = sorted({t or NO_TYPE for s in sets for t in s.types})
    if codes == [NO_TYPE]:
        return []
    rows = []
    for code in [*codes, None]:
        picks = [np.array([code is None or (t or NO_TYPE) == code for t in s.types]) for s in sets]
        counts = [int(p.sum()) for p in picks]
        cells: list[float | str] = []
        for metric in sets[0].scores:
            if min(counts) < min_pairs:
                cells.append(too_few(min_pairs))
                continue
            values, whys = zip(*(_srcc(s.scores[metric][p], s.labels[p]) for s, p in zip(sets, picks)))
            cells.append(_missing(whys, len(sets)) if any(whys) else float(np.median(values)))
        rows.append([code or "all", type_names.get(code, "") if code else "all types", _pairs_cell(counts), *cells])
    return rows


def _type_cell(value: float | str, digits: int = 4) -> str:
    return value if isinstance(value, str) else figure(value, digits=digits)


def comparison_report(sets: Sequence[ScoredSet], prefix: str | os.PathLike, title: str,
                      type_names: dict[str, str] | None = None, label_name: str = "label",
                      min_pairs: int = TYPE_MIN_PAIRS, set_name: str = "split") -> str:
    """Write ``<prefix>_comparison.md`` (returned), ``_comparison.csv``, ``_types.csv``, ``_scatter.png``, ``_types.png``."""
    from ahiq.utils.visual import ScatterPanel, save_fitted_scatter, save_type_bars

    prefix, metrics, several = Path(prefix), list(sets[0].scores), len(sets) > 1
    out = lambda suffix: prefix.with_name(prefix.name + suffix)
    found = evaluations(sets)
    md, table = overall_rows(sets, found)
    sets_text = f"{len(sets)} {set_name}s, median (mean ± std)" if several else "one set"
    text = markdown_table(["metric", "pairs", *(LABELS[k] for k in OVERALL), "fit"], md,
                          f"{title}: every metric on the same pairs ({sets_text}; predictions oriented higher = "
                          "better; fit: the monotonic mapping behind the fitted figures)")
    write_csv(out("_comparison.csv"), ["metric", "splits", "pairs_min", "pairs_max",
                                       *(f"{k}_{s}" for k in OVERALL for s in ("median", "mean", "std")), "fit"], table)
    types = type_rows(sets, type_names or {}, min_pairs)
    if types:
        heading = f"{title}: SRCC per distortion type" + (f" (median over the {set_name}s)" if several else "")
        text += "\n" + markdown_table(["type", "name", "pairs", *metrics],
                                      [[*r[:3], *(_type_cell(v) for v in r[3:])] for r in types], heading)
        text += (f"\nRows with fewer than {min_pairs} pairs{' on a ' + set_name if several else ''} get no SRCC "
                 "(n/a; an SRCC of so few pairs says little); the first table has the figures of all pairs.\n")
        write_csv(out("_types.csv"), ["type", "name", "pairs", *metrics],
                  [[*r[:3], *(_type_cell(v, 6) for v in r[3:])] for r in types])
        shown = types[:-1]
        few = too_few(min_pairs)
        notes = [next((f"{r[2]} pair{'' if r[2] == '1' else 's'}, fewer than {min_pairs}" if v == few else v
                       for v in r[3:] if isinstance(v, str)), None) for r in shown]
        save_type_bars([f"{r[0]} {r[1]}".strip() for r in shown],
                       {m: [v if isinstance(v, float) else math.nan for v in (r[3 + k] for r in shown)]
                        for k, m in enumerate(metrics)}, out("_types.png"), heading, notes)
    else:
        text += "\nno distortion types known for these pairs (no per-type table)\n"
    n = sum(len(s.labels) for s in sets)
    fitted = any(e.fit is not None for m in metrics for e in found[m])  # no curve where no set could be fitted
    curves = f", one fitted curve per {set_name}" if fitted else ", no fitted curve (too few pairs)"
    drawn = f"every {set_name}'s pairs, n={n}{curves}" if several else f"n={n}"
    panels = [ScatterPanel(m, _panel_caption(found[m], several), [s.scores[m] for s in sets],
                           [e.fit for e in found[m]]) for m in metrics]
    save_fitted_scatter(panels, [s.labels for s in sets], out("_scatter.png"), label_name, f"{title}: {drawn}")
    atomic_write_text(out("_comparison.md"), text)
    return text


def _panel_caption(per_set: Sequence[Evaluation], several: bool) -> str:
    lines = [f"median of {len(per_set)}" if several else ""]
    for key in ("SRCC", "PLCC_fitted"):
        median = spread_cells([e.metrics[key] for e in per_set], [e.why.get(key) for e in per_set])[1]
        lines.append(f"{LABELS[key]} {median}")
    form = _fit_cell(per_set)
    return "\n".join(lines + ([] if form.startswith("n/a") else [f"fit: {form}"]))  # no fit: PLCC(fitted) says why
