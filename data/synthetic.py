"""A generated full-reference IQA dataset in the PIPAL training layout (``Train_Ref/A0001.bmp``,
``Train_Dis/A0001_TT_LL.bmp``, ``Train_Label/A0001.txt``, ``synthetic.json`` last), deterministic in ``seed``:
1/f-noise references with random shapes, the :data:`DISTORTIONS` at ``LEVELS`` levels, a pseudo-MOS from SSIM and PSNR."""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import cv2
import numpy as np

from ahiq.utils.errors import UserError
from ahiq.utils.io import atomic_write, atomic_write_text

VERSION = 1
LEVELS = 4
MOS_MIN, MOS_MAX = 900.0, 1850.0
RATER_NOISE_SD = 10.0

# (type name, parameter per level, mildest first); saved in synthetic.json, so a change regenerates a folder.
DISTORTIONS: list[tuple[str, list]] = [
    ("gaussian_blur_sigma", [0.8, 1.4, 2.2, 3.5]),
    ("gaussian_noise_sd", [5.0, 10.0, 18.0, 30.0]),
    ("jpeg_quality", [60, 30, 15, 6]),
    ("contrast_factor_brightness_shift", [[0.8, 6.0], [0.62, 12.0], [0.46, 20.0], [0.32, 30.0]]),
    ("colour_cast_offset", [8.0, 16.0, 28.0, 44.0]),
    ("down_up_factor", [1.5, 2.0, 3.0, 4.0]),
]

# Constants of the pseudo-MOS (clean_pseudo_mos); also saved in synthetic.json.
SSIM_WEIGHT = 0.5
PSNR_LOW, PSNR_HIGH = 15.0, 45.0
LOGISTIC_CENTRE, LOGISTIC_SCALE = 0.52, 0.08

# RGB directions: grey (1, 1, 1), and two unit chroma axes perpendicular to grey and to each other.
GREY, U_DIR, V_DIR = np.ones(3), np.array([1.0, -1.0, 0.0]) / math.sqrt(2), np.array([1.0, 1.0, -2.0]) / math.sqrt(6)

_PARTIAL_MARKER = ".synthetic-partial"
_OUR_NAMES = re.compile(r"A\d{4}(_\d{2}_\d{2})?\.(bmp|txt)")


def ensure_synthetic(root: str | os.PathLike, n_refs: int = 12, size: int = 128, seed: int = 0) -> Path:
    """Write the synthetic dataset under ``root`` unless an identical one is there; returns ``root``."""
    root = Path(root)
    if not 1 <= n_refs <= 9999:
        raise UserError(f"synthetic dataset: n_refs={n_refs} is out of range; use 1..9999 (4-digit ids)")
    if size < 32:
        raise UserError(f"synthetic dataset: size={size} is too small; use 32 or more pixels")
    if seed < 0:
        raise UserError(f"synthetic dataset: seed={seed} is negative; use a seed >= 0")
    mos = {"ssim_weight": SSIM_WEIGHT, "psnr_low": PSNR_LOW, "psnr_high": PSNR_HIGH, "logistic_centre": LOGISTIC_CENTRE,
           "logistic_scale": LOGISTIC_SCALE, "mos_min": MOS_MIN, "mos_max": MOS_MAX, "rater_noise_sd": RATER_NOISE_SD}
    params = {"version": VERSION, "n_refs": n_refs, "size": size, "seed": seed, "levels": LEVELS, "pseudo_mos": mos,
              "distortions": {f"{t:02d}": {"name": name, "levels": values} for t, (name, values) in enumerate(DISTORTIONS)}}
    meta, ids = root / "synthetic.json", [f"A{i + 1:04d}" for i in range(n_refs)]
    files = [p for r in ids for p in [root / "Train_Ref" / f"{r}.bmp", root / "Train_Label" / f"{r}.txt",
                                      *(root / "Train_Dis" / name for name in distorted_names(r))]]
    try:
        if json.loads(meta.read_text(encoding="utf-8")) == params and all(p.is_file() for p in files):
            return root
    except (OSError, ValueError):
        pass  # no marker, or an unreadable one: the folder is regenerated
    _prepare_folder(root)
    _generate(root, ids, size, seed)
    # Written last: a generation interrupted before this line leaves no synthetic.json and is redone.
    atomic_write_text(meta, json.dumps(params, indent=2) + "\n")
    (root / _PARTIAL_MARKER).unlink(missing_ok=True)
    return root


def distorted_names(ref_id: str) -> list[str]:
    """The distorted file names of one reference, in label-file order (type-major, then level)."""
    return [f"{ref_id}_{t:02d}_{lv:02d}.bmp" for t in range(len(DISTORTIONS)) for lv in range(LEVELS)]


def ssim_rgb(ref: np.ndarray, dist: np.ndarray) -> float:
    """Mean SSIM of two ``(H, W, 3)`` uint8 images over pixels and channels (11x11 Gaussian window, sigma 1.5)."""
    x, y = ref.astype(np.float64), dist.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def smooth(a: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(a, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = smooth(x), smooth(y)
    vx, vy, cov = smooth(x * x) - mx * mx, smooth(y * y) - my * my, smooth(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(ssim_map.mean())


def psnr_rgb(ref: np.ndarray, dist: np.ndarray) -> float:
    """PSNR in dB of two uint8 images over all values, capped at 60 dB (identical images)."""
    mse = float(np.mean((ref.astype(np.float64) - dist.astype(np.float64)) ** 2))
    return 60.0 if mse <= 255.0**2 * 1e-6 else min(60.0, 10 * math.log10(255.0**2 / mse))


def clean_pseudo_mos(ref: np.ndarray, dist: np.ndarray) -> float:
    """The noise-free pseudo-MOS of a distorted image: a logistic of ``q``, SSIM and the clipped PSNR mixed at
    ``SSIM_WEIGHT``, from ``MOS_MIN`` to ``MOS_MAX`` (the label adds rater noise of ``RATER_NOISE_SD``)."""
    psnr_term = min(1.0, max(0.0, (psnr_rgb(ref, dist) - PSNR_LOW) / (PSNR_HIGH - PSNR_LOW)))
    q = SSIM_WEIGHT * ssim_rgb(ref, dist) + (1 - SSIM_WEIGHT) * psnr_term
    return MOS_MIN + (MOS_MAX - MOS_MIN) / (1 + math.exp(-(q - LOGISTIC_CENTRE) / LOGISTIC_SCALE))


def make_reference(size: int, seed: int, index: int) -> np.ndarray:
    """Reference image ``index`` (0-based) of the dataset with ``seed``: ``(size, size, 3)`` RGB uint8."""
    rng = np.random.default_rng([seed, 0, index])
    alpha = rng.uniform(0.9, 1.4)
    lum = _one_over_f_fields(rng, size, count=1, alpha=alpha)[0]
    # Colour varies more smoothly than brightness in photographs: a steeper spectrum for the chroma fields.
    chroma_u, chroma_v = _one_over_f_fields(rng, size, count=2, alpha=alpha + 0.6)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    base = rng.uniform(60, 190) * GREY + rng.normal(0, 30) * U_DIR + rng.normal(0, 30) * V_DIR
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)) * rng.uniform(0, 60)
    img = (base + ((rng.uniform(15, 40) * lum + ramp)[..., None] * GREY
                   + rng.uniform(4, 12) * (chroma_u[..., None] * U_DIR + chroma_v[..., None] * V_DIR)))

    for _ in range(int(rng.integers(3, 8))):
        mask = _random_shape_mask(rng, size)
        # Rolling the luminance field gives each shape its own texture without another FFT.
        texture = np.roll(lum, tuple(int(s) for s in rng.integers(0, size, 2)), axis=(0, 1))
        fill = rng.uniform(20, 235, 3) + rng.uniform(3, 25) * texture[..., None] * GREY
        img = img * (1 - mask[..., None]) + fill * mask[..., None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _prepare_folder(root: Path) -> None:
    """Empty our three folders of files we may have written before, refusing folders we did not write."""
    folders = [root / "Train_Ref", root / "Train_Dis", root / "Train_Label"]
    ours = (root / "synthetic.json").exists() or (root / _PARTIAL_MARKER).exists()
    if not ours and any(f.is_dir() and any(f.iterdir()) for f in folders):
        raise UserError(f"{root}: holds Train_Ref/Train_Dis/Train_Label data not written by the synthetic "
                        "generator; choose an empty folder for the synthetic dataset")
    root.mkdir(parents=True, exist_ok=True)
    (root / _PARTIAL_MARKER).write_text("generation in progress or interrupted\n", encoding="utf-8")
    (root / "synthetic.json").unlink(missing_ok=True)
    for folder in folders:
        folder.mkdir(exist_ok=True)
        for path in folder.iterdir():
            # Only files matching our own names go: a stale A0013 after shrinking n_refs would be loaded.
            if path.is_file() and _OUR_NAMES.fullmatch(path.name):
                path.unlink()


def _generate(root: Path, ids: list[str], size: int, seed: int) -> None:
    for i, ref_id in enumerate(ids):
        ref = make_reference(size, seed, i)
        _write_bmp(root / "Train_Ref" / f"{ref_id}.bmp", ref)
        noise_rng = np.random.default_rng([seed, 1, i])
        lines = []
        for k, name in enumerate(distorted_names(ref_id)):
            t, lv = divmod(k, LEVELS)
            # The same stream at every level keeps the levels of a type ordered.
            kind, values = DISTORTIONS[t]
            dist = _distort(ref, kind, values[lv], np.random.default_rng([seed, 2, i, t]))
            _write_bmp(root / "Train_Dis" / name, dist)
            score = clean_pseudo_mos(ref, dist) + noise_rng.normal(0.0, RATER_NOISE_SD)
            lines.append(f"{name},{min(MOS_MAX, max(MOS_MIN, score)):.4f}\n")
        atomic_write_text(root / "Train_Label" / f"{ref_id}.txt", "".join(lines))


def _write_bmp(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".bmp", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise UserError(f"{path}: OpenCV could not encode the image as BMP; check the OpenCV install")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.tobytes()))


def _one_over_f_fields(rng: np.random.Generator, size: int, count: int, alpha: float) -> np.ndarray:
    """``count`` zero-mean unit-variance fields with amplitude spectrum ~ 1/f^alpha: ``(count, size, size)``."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    freq = np.sqrt(fx * fx + fy * fy)
    freq[0, 0] = 1.0  # the DC term is zeroed below; this only avoids dividing by zero
    shape = (count, size, size // 2 + 1)
    spectrum = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / freq**alpha
    spectrum[:, 0, 0] = 0
    fields = np.fft.irfft2(spectrum, s=(size, size))
    return fields / fields.std(axis=(1, 2), keepdims=True)


def _random_shape_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A ``(size, size)`` float mask in [0, 1] of one anti-aliased random shape."""
    canvas = np.zeros((size, size), np.uint8)
    centre = rng.uniform(0.1, 0.9, 2) * size
    radius = rng.uniform(0.06, 0.3) * size
    kind = int(rng.integers(0, 4))
    shift = 4  # cv2's fixed-point coordinates give sub-pixel shapes
    scale = 1 << shift
    if kind == 0:
        axes = (int(radius * scale), int(radius * rng.uniform(0.3, 1.0) * scale))
        cv2.ellipse(canvas, tuple(int(c * scale) for c in centre), axes, float(rng.uniform(0, 180)), 0, 360,
                    255, -1, cv2.LINE_AA, shift)
    elif kind == 1:
        box = ((float(centre[0]), float(centre[1])), (float(2 * radius), float(2 * radius * rng.uniform(0.2, 1.0))),
               float(rng.uniform(0, 180)))
        corners = np.rint(cv2.boxPoints(box) * scale).astype(np.int32)
        cv2.fillPoly(canvas, [corners], 255, cv2.LINE_AA, shift)
    elif kind == 2:
        n = int(rng.integers(3, 7))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        radii = radius * rng.uniform(0.5, 1.0, n)
        pts = centre + np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)
        cv2.fillPoly(canvas, [np.rint(pts * scale).astype(np.int32)], 255, cv2.LINE_AA, shift)
    else:
        end = centre + rng.uniform(-2, 2, 2) * radius
        cv2.line(canvas, tuple(int(c * scale) for c in centre), tuple(int(c * scale) for c in end), 255,
                 max(1, int(rng.uniform(0.01, 0.05) * size)), cv2.LINE_AA, shift)
    return canvas.astype(np.float64) / 255.0


def _distort(img: np.ndarray, kind: str, value, rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 image distorted by ``kind`` (a name of :data:`DISTORTIONS`) at ``value``."""
    if kind == "gaussian_blur_sigma":
        return cv2.GaussianBlur(img, (0, 0), value, borderType=cv2.BORDER_REFLECT)
    if kind == "jpeg_quality":
        # JPEG's chroma handling assumes BGR input in OpenCV, so convert rather than encode RGB as BGR.
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(value)])
        if not ok:
            raise UserError("OpenCV could not encode JPEG; check that OpenCV was built with JPEG support")
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    if kind == "down_up_factor":
        h, w = img.shape[:2]
        small = cv2.resize(img, (max(1, round(w / value)), max(1, round(h / value))), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    x = img.astype(np.float64)
    if kind == "gaussian_noise_sd":
        x += rng.normal(0.0, value, img.shape)
    elif kind == "contrast_factor_brightness_shift":
        (factor, shift), mean = value, x.mean()
        x = mean + factor * (x - mean) + (1.0 if rng.random() < 0.5 else -1.0) * shift
    elif kind == "colour_cast_offset":
        angle = rng.uniform(0, 2 * math.pi)
        x += value * (math.cos(angle) * U_DIR + math.sin(angle) * V_DIR)
    else:
        raise ValueError(f"unknown distortion {kind!r}; see synthetic.DISTORTIONS")
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
