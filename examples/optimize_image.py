"""Make a degraded image better in AHIQ's eyes: Adam steps on AHIQLoss (engine/loss.py).

    python examples/optimize_image.py --ref I01.png --blur 2 --steps 15 --output restored.png
    python examples/optimize_image.py --ref I01.png --dist I01_01_05.png --checkpoint FILE

A step that does not raise the score is taken back and the rate halved, so the printed score only rises."""
from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch

from ahiq.data.crops import parse_crops
from ahiq.data.images import as_unit_float, read_image
from ahiq.engine.loss import AHIQLoss
from ahiq.options.base_options import OneDefaultHelpFormatter, OneLineErrors, add_option, check_value
from ahiq.options.score_options import ScoreOptions
from ahiq.utils.errors import UserError, cli_main
from ahiq.utils.io import atomic_write, check_outputs, check_writable


def parse(argv=None) -> argparse.Namespace:
    p = OneLineErrors(description=__doc__.split("\n\n")[0], formatter_class=OneDefaultHelpFormatter, allow_abbrev=False)
    p.add_argument("--ref", required=True, help="reference image file")
    p.add_argument("--dist", help="start image (same size as --ref); default: the reference degraded by --blur/--noise")
    p.add_argument("--blur", type=float, default=2.0, help="Gaussian blur sigma in pixels for the start image")
    p.add_argument("--noise", type=float, default=0.0, help="Gaussian noise std (0..1 scale) for the start image")
    options = ScoreOptions().options  # these options as score.py declares them
    for name in ("checkpoint", "vit_weights", "cnn_weights", "pretrained_backbones", "crop_size", "device"):
        add_option(p, options[name], "score", options[name].default_for("score"))
    p.add_argument("--crops", default="center", help="center, five, nine or grid:N (fixed windows, so scores compare)")
    p.add_argument("--steps", type=int, default=15, help="Adam steps")
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (pixel values in [0, 1])")
    p.add_argument("--seed", type=int, default=0, help="seed of the start image's noise and of random weights")
    p.add_argument("--output", help="write the final image here (PNG, 8 or 16 bits like --ref)")
    opt = p.parse_args(argv)
    if parse_crops(opt.crops)[0] == "random":
        raise UserError(f"--crops {opt.crops}: use fixed windows (center, five, nine, grid:N) so steps compare")
    if not (1 <= opt.steps <= 10**6 and 0 < opt.lr < 1e3 and 0 <= opt.blur < 1e3 and 0 <= opt.noise < 1e3):
        raise UserError("--steps must be 1..10^6, --lr > 0, --blur and --noise >= 0 (all finite)")
    check_value(options["seed"], opt.seed)
    check_writable(opt.output, "--output ")
    check_outputs({"--output ": opt.output},
                  [p for p in (opt.ref, opt.dist, opt.checkpoint, opt.vit_weights, opt.cnn_weights) if p])
    return opt


def start_image(opt, ref: np.ndarray, levels: int) -> np.ndarray:
    """The image to improve, ``(H, W, 3)`` in [0, 1]: ``--dist``, or the reference degraded and rounded to ``levels``."""
    if opt.dist:
        dist = as_unit_float(read_image(opt.dist))
        if dist.shape != ref.shape:
            raise UserError(f"{opt.dist}: size {dist.shape[1]}x{dist.shape[0]} differs from --ref "
                            f"{ref.shape[1]}x{ref.shape[0]}")
        return dist
    out = cv2.GaussianBlur(ref, (0, 0), opt.blur) if opt.blur > 0 else ref
    noise = np.random.default_rng(opt.seed).normal(0, opt.noise, ref.shape)
    return (np.clip(out + noise, 0, 1) * levels).round().astype(np.float32) / levels


def optimise(loss_fn: AHIQLoss, image: torch.Tensor, ref: torch.Tensor, steps: int, lr: float) -> list[float]:
    """Adam on the pixels of ``image`` ``(1, 3, H, W)`` (in place); the score before and after each step."""
    image.requires_grad_(True)
    optimiser = torch.optim.Adam([image], lr=lr)
    scores = [loss_fn.score(image, ref).item()]
    for step in range(1, steps + 1):
        optimiser.zero_grad()
        loss_fn(image, ref).backward()
        before = image.detach().clone()
        optimiser.step()
        with torch.no_grad():
            image.clamp_(0, 1)
        score = loss_fn.score(image, ref).item()
        if score <= scores[-1]:  # overshot: take the step back, shorten the next
            with torch.no_grad():
                image.copy_(before)
            optimiser.param_groups[0]["lr"] /= 2
            score = scores[-1]
        scores.append(score)
        print(f"step {step:3d}: score {score:.6f}  (lr {optimiser.param_groups[0]['lr']:.2g})")
    return scores


@cli_main
def main(argv=None) -> list[float]:
    opt = parse(argv)
    torch.manual_seed(opt.seed)
    ref_file = read_image(opt.ref)
    dtype = np.uint8 if ref_file.dtype == np.uint8 else np.uint16
    levels = np.iinfo(dtype).max
    ref_np = as_unit_float(ref_file)
    dist_np = start_image(opt, ref_np, levels)
    loss_fn = AHIQLoss(opt.checkpoint, vit_weights=opt.vit_weights, cnn_weights=opt.cnn_weights,
                       pretrained_backbones=opt.pretrained_backbones, crops=opt.crops, crop_size=opt.crop_size,
                       device=opt.device)
    if min(ref_np.shape[:2]) < loss_fn.crop_size:
        raise UserError(f"--ref {opt.ref}: {ref_np.shape[1]}x{ref_np.shape[0]} is smaller than the "
                        f"{loss_fn.crop_size}-pixel crop; give --crop_size (a smaller multiple of 32)")
    image, ref = (torch.from_numpy(a).permute(2, 0, 1)[None].to(loss_fn.device) for a in (dist_np, ref_np))
    scores = optimise(loss_fn, image, ref, opt.steps, opt.lr)
    print(f"score {scores[0]:.6f} -> {scores[-1]:.6f} in {opt.steps} steps (loss {1 - scores[0]:.6f} -> "
          f"{1 - scores[-1]:.6f})")
    if opt.output:
        pixels = (image.detach()[0].permute(1, 2, 0).clamp(0, 1) * levels).round().cpu().numpy().astype(dtype)
        data = cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))[1]
        atomic_write(opt.output, data.tofile)
        print(f"wrote {opt.output}")
    return scores


if __name__ == "__main__":
    main()
