"""Classical full-reference metrics (piq), oriented higher = better, and the comparison tables beside AHIQ."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import piq
import torch
from torchvision.models import VGG16_Weights

from ahiq.data.datasets import DATASETS
from ahiq.engine.config import BASELINE_NAMES, parse_baselines  # noqa: F401  (re-exported)
from ahiq.data.distortions import TYPE_NAMES, pair_types
from ahiq.data.images import as_unit_float, read_header, read_image
from ahiq.data.records import Pair, result_names
from ahiq.utils.comparison import TYPE_MIN_PAIRS, ScoredSet, comparison_report
from ahiq.utils.errors import UserError, arg
from ahiq.utils.inputs import reading

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (dist, ref) (B, 3, H, W) in [0, 1] -> (B,)


@dataclass(frozen=True)
class Baseline:
    """A piq metric: title, orientation, builder, the smallest image side it takes, its weight URLs."""

    title: str
    higher_better: bool
    build: Callable[[], Metric]
    min_size: int = 1
    weights: tuple[str, ...] = ()


def _functional(fn: Callable, **kwargs) -> Callable[[], Metric]:
    return lambda: partial(fn, data_range=1.0, reduction="none", **kwargs)


def _learned(cls: type) -> Callable[[], Metric]:
    return lambda: cls(reduction="none").eval()


# piq builds its VGG16 with torchvision's ImageNet weights, then loads its own layer weights.
_VGG16 = VGG16_Weights.IMAGENET1K_V1.url
BASELINES: dict[str, Baseline] = {
    "psnr": Baseline("PSNR", True, _functional(piq.psnr)),
    "ssim": Baseline("SSIM", True, _functional(piq.ssim), min_size=11),  # piq: 11x11 window
    "ms_ssim": Baseline("MS-SSIM", True, _functional(piq.multi_scale_ssim), min_size=161),  # 5 scales of 11x11
    "vif": Baseline("VIF", True, _functional(piq.vif_p), min_size=41),  # piq's VIF in the pixel domain
    "fsim": Baseline("FSIM", True, _functional(piq.fsim)),  # FSIMc (chromatic)
    "gmsd": Baseline("GMSD", False, _functional(piq.gmsd)),
    "lpips": Baseline("LPIPS", False, _learned(piq.LPIPS), weights=(piq.LPIPS._weights_url, _VGG16)),
    "dists": Baseline("DISTS", False, _learned(piq.DISTS), weights=(piq.DISTS._weights_url, _VGG16)),
}
assert tuple(BASELINES) == BASELINE_NAMES


def weight_files(name: str) -> list[Path]:
    """Where ``torch.hub`` keeps the weight files of baseline ``name`` (``$TORCH_HOME/hub/checkpoints/``)."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    return [folder / os.path.basename(url) for url in BASELINES[name].weights]


def build_baseline(name: str, device: torch.device | str = "cpu") -> Metric:
    """Baseline ``name`` ready to score; a learned one without its weights (and offline) stops with one line."""
    spec = BASELINES[name]
    try:
        metric = spec.build()
    except (OSError, RuntimeError) as err:  # urllib's URLError is an OSError; a damaged file a RuntimeError
        files = weight_files(name)
        raise UserError(
            f"{name}: piq could not load its weights ({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
            f"it reads {' and '.join(f.name for f in files)} from {files[0].parent}{os.sep} (torch.hub; $TORCH_HOME "
            f"moves it): online they download there themselves, offline copy them there from "
            f"{' and '.join(spec.weights)}, or leave {name} out of {arg('baselines')}") from None
    return metric.to(device) if isinstance(metric, torch.nn.Module) else metric


def check_baselines(names: Sequence[str], pairs: Sequence[Pair] = ()) -> None:
    """Before any work: the learned metrics' weights are at hand and every image is large enough for each metric."""
    for name in names:
        if not all(f.is_file() for f in weight_files(name)):
            build_baseline(name)
        for f in weight_files(name):
            reading(f)  # inputs of the run: no table or picture of it may land there
    need = {n: BASELINES[n].min_size for n in names if BASELINES[n].min_size > 1}
    for pair in pairs if need else ():
        header = read_header(pair.dist, max_pixels=None)  # screened already, within the run's pixel budget
        h, w = header.height, header.width
        for name, size in need.items():
            if min(h, w) < size:
                raise UserError(f"{pair.dist}: {w}x{h} is smaller than {BASELINES[name].title} takes ({size}x{size} "
                                f"in piq); leave {name} out of {arg('baselines')}")


def _image(path: Path) -> torch.Tensor:
    image = read_image(path, max_pixels=None)  # the pairs were screened within the run's pixel budget
    return torch.from_numpy(np.ascontiguousarray(as_unit_float(image))).permute(2, 0, 1)


def baseline_scores(names: Sequence[str], pairs: Sequence[Pair], device: torch.device | str = "cpu",
                    batch_size: int = 8) -> dict[str, np.ndarray]:
    """``{title: predictions}`` of each baseline on ``pairs``, higher = better, batched by reference."""
    metrics = {n: build_baseline(n, device) for n in names}
    out = {n: np.empty(len(pairs)) for n in names}
    start = 0
    with torch.no_grad():
        while start < len(pairs):
            end = start + 1
            while end < len(pairs) and end - start < batch_size and pairs[end].ref == pairs[start].ref:
                end += 1
            dist = torch.stack([_image(p.dist) for p in pairs[start:end]]).to(device)
            ref = _image(pairs[start].ref).to(device)[None].expand_as(dist)
            for name, metric in metrics.items():
                values = metric(dist, ref).reshape(-1).double().cpu().numpy()
                out[name][start:end] = values if BASELINES[name].higher_better else -values
            start = end
    return {BASELINES[n].title: v for n, v in out.items()}


def comparison_files(prefix: str | os.PathLike) -> list[Path]:
    """The files :func:`compare_with_baselines` writes for ``prefix`` (outputs to guard before any work)."""
    prefix = Path(prefix)
    return [prefix.with_name(prefix.name + s) for s in ("_baselines.csv", "_comparison.md", "_comparison.csv",
                                                        "_types.csv", "_scatter.png", "_types.png")]


def compare_with_baselines(pairs: Sequence[Pair], ahiq, names: Sequence[str], prefix: str | os.PathLike,
                           dataset: str | None = None, device: torch.device | str = "cpu",
                           min_pairs: int = TYPE_MIN_PAIRS) -> str:
    """Score ``pairs`` with each baseline beside AHIQ's ``ahiq``, write the tables and pictures; the markdown."""
    pairs = list(pairs)
    scored = ScoredSet(result_names(pairs), pair_types(dataset, pairs), np.array([p.score for p in pairs], float),
                       {"AHIQ": np.asarray(ahiq, dtype=np.float64), **baseline_scores(names, pairs, device)})
    prefix = Path(prefix)
    scored.write(prefix.with_name(prefix.name + "_baselines.csv"))
    return comparison_report([scored], prefix, dataset or "pairs", TYPE_NAMES.get(dataset or ""),
                             DATASETS[dataset].label if dataset in DATASETS else "label", min_pairs)


def summarise_splits(scored_files: Sequence[str | os.PathLike], prefix: str | os.PathLike, dataset: str,
                     min_pairs: int = TYPE_MIN_PAIRS, note: str = "") -> str:
    """The comparison over the test parts of several splits, from each split's ``<output>_baselines.csv``."""
    sets = [ScoredSet.read(f) for f in scored_files]
    several = "s" if len(sets) > 1 else ""
    title = f"{dataset}{f' {note}' if note else ''} ({len(sets)} split{several}, test part{several})"
    return comparison_report(sets, prefix, title, TYPE_NAMES.get(dataset),
                             DATASETS[dataset].label if dataset in DATASETS else "label", min_pairs)
