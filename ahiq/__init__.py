"""AHIQ, attention-based hybrid full-reference image quality: a metric, a loss and a research codebase.

    import ahiq
    metric = ahiq.create_metric()                 # the released model (downloaded once into a user cache)
    scores = metric("dist.png", "ref.png")        # (B,) tensor; higher = better

Inputs may be file paths, PIL images, numpy arrays (HxWx3 uint8 or float in [0, 1]) or tensors ((3, H, W) or
(B, 3, H, W) in [0, 1]). ``ahiq.score(dist, ref)`` is the one-pair shortcut; ``create_metric(as_loss=True)`` a
loss whose gradients reach ``dist``. The command ``ahiq score|test|train|export`` runs the research scripts.
"""
from __future__ import annotations

from pathlib import Path

__version__ = "1.0.0"

# In a clone the floors (models/, data/, ...) are beside this folder, in a wheel inside it: either way one name,
# ahiq.models, and `import ahiq` works from a clone with no install.
_CLONE = Path(__file__).resolve().parent.parent
if (_CLONE / "pyproject.toml").is_file() and (_CLONE / "models" / "ahiq.py").is_file():
    __path__.append(str(_CLONE))  # type: ignore[name-defined]  # noqa: F821

# Public names -> the module defining them; imported on first use, so `import ahiq` (and `ahiq --help`) stays fast.
_PUBLIC = {
    "create_metric": "ahiq.engine.metric",
    "score": "ahiq.engine.metric",
    "AHIQMetric": "ahiq.engine.metric",
    "AHIQLoss": "ahiq.engine.loss",
    "load_model": "ahiq.models.checkpoint",
    "score_pairs": "ahiq.engine.scoring",
    "ModelConfig": "ahiq.models.config",
    "UserError": "ahiq.utils.errors",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'ahiq' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
