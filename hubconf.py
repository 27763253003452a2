"""torch.hub entry: ``torch.hub.load("OWNER/REPO", "ahiq", checkpoint=None, crops="center", ...)`` (from a clone,
``torch.hub.load(path, "ahiq", source="local", ...)``) returns :func:`ahiq.create_metric`'s ``metric(dist, ref) -> (B,)``.
"""
dependencies = ["torch", "torchvision", "timm", "numpy", "scipy", "PIL", "cv2", "tqdm", "safetensors"]


def ahiq(checkpoint=None, **kwargs):
    """AHIQ full-reference quality (higher = better); the arguments of ``ahiq.create_metric``."""
    import warnings
    from pathlib import Path

    import ahiq as package  # torch.hub puts this folder first on the path while it calls us

    here = Path(__file__).resolve().parent
    if Path(package.__file__).resolve().parent.parent != here:
        warnings.warn(f"ahiq was already imported from {package.__file__}; torch.hub uses that one, not {here}",
                      stacklevel=2)
    return package.create_metric(checkpoint, **kwargs)
