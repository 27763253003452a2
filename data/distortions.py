"""The distortion type of each pair, read from its dataset's own naming, and the published names of the types."""
from __future__ import annotations

import re

from ahiq.data.records import Pair
from ahiq.data.synthetic import DISTORTIONS

# Lin, Hosu, Saupe, "KADID-10k: A Large-scale Artificially Distorted IQA Database", QoMEX 2019: types 01..25.
KADID10K_TYPES = (
    "Gaussian blur", "lens blur", "motion blur", "color diffusion", "color shift", "color quantization",
    "color saturation 1", "color saturation 2", "JPEG2000", "JPEG", "white noise", "white noise in color component",
    "impulse noise", "multiplicative noise", "denoise", "brighten", "darken", "mean shift", "jitter",
    "non-eccentricity patch", "pixelate", "quantization", "color block", "high sharpen", "contrast change")
# Ponomarenko et al., "Image database TID2013", Signal Processing: Image Communication 2015: types 01..24.
TID2013_TYPES = (
    "additive Gaussian noise", "additive noise in color components", "spatially correlated noise", "masked noise",
    "high frequency noise", "impulse noise", "quantization noise", "Gaussian blur", "image denoising",
    "JPEG compression", "JPEG2000 compression", "JPEG transmission errors", "JPEG2000 transmission errors",
    "non eccentricity pattern noise", "local block-wise distortions of different intensity",
    "mean shift (intensity shift)", "contrast change", "change of color saturation", "multiplicative Gaussian noise",
    "comfort noise", "lossy compression of noisy images", "image color quantization with dither",
    "chromatic aberrations", "sparse sampling and reconstruction")

TYPE_NAMES: dict[str, dict[str, str]] = {
    "kadid10k": {f"{i:02d}": name for i, name in enumerate(KADID10K_TYPES, 1)},
    "tid2013": {f"{i:02d}": name for i, name in enumerate(TID2013_TYPES, 1)},
    # Larson & Chandler, CSIQ (J. Electronic Imaging 2010), keyed by the release's dst_imgs/ folders.
    "csiq": {"awgn": "additive white Gaussian noise", "jpeg": "JPEG", "jpeg2000": "JPEG2000",
             "fnoise": "additive pink Gaussian noise", "blur": "Gaussian blur", "contrast": "global contrast decrement"},
    # LIVE release 2 (Sheikh et al. 2006), keyed by its folders.
    "live": {"jp2k": "JPEG2000", "jpeg": "JPEG", "wn": "white noise", "gblur": "Gaussian blur",
             "fastfading": "fast fading (JPEG2000 over a Rayleigh channel)"},
    "synthetic": {f"{i:02d}": name.replace("_", " ") for i, (name, _) in enumerate(DISTORTIONS)},
}

_NAMED = {"kadid10k": re.compile(r"^I\d\d_(\d\d)_\d\d$", re.I), "tid2013": re.compile(r"^I\d\d_(\d\d)_\d$", re.I),
          "pipal": re.compile(r"^A\d{4}_(\d\d)_\d\d$"), "synthetic": re.compile(r"^A\d{4}_(\d\d)_\d\d$"),
          "": re.compile(r"^[A-Z]\d+_(\d\d)_\d+$", re.I)}


def pair_types(dataset: str | None, pairs: list[Pair]) -> list[str | None]:
    """The distortion type of each pair: ``TT`` of ``<ref>_TT_LL`` names, the folder (CSIQ, LIVE) or the ``type``
    column (csv); None where the naming gives none."""
    if dataset in ("csiq", "live"):
        return [p.dist.parent.name.lower() for p in pairs]
    if dataset == "csv":
        return [p.type for p in pairs]
    rule = _NAMED.get(dataset or "", _NAMED[""])
    return [m.group(1) if (m := rule.match(p.dist.stem)) else None for p in pairs]


def type_name(dataset: str | None, code: str) -> str:
    """The published name of type ``code`` (``'01'``, ``'awgn'``), else the code itself (PIPAL, csv)."""
    return TYPE_NAMES.get(dataset or "", {}).get(code, code)
