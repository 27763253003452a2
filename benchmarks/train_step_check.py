"""Training steps of ours against the authors' training computation, from the same heads on the same batch.

    python benchmarks/train_step_check.py                 # ViT-B/8 + ResNet-50, three 224 crop pairs, CPU fp32
    python benchmarks/train_step_check.py --deform_impl torchvision

On crops of the KADID-10k images in ``../shared/data/mini``: per-step losses and learning rates, first-step gradient
differences and the share of equal head weights, against the tolerances of ``tests/test_training.py``."""
from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.authors_pattern import AuthorsPattern, authors_optimizer, authors_train_step  # noqa: E402
from benchmarks.common import KADID, image_tensor, machine, parser  # noqa: E402
from ahiq.engine.training import build_optimizer, build_scheduler, train_step  # noqa: E402
from ahiq.models.ahiq import AHIQ, ModelConfig, build_ahiq  # noqa: E402
from ahiq.utils.tables import read_csv  # noqa: E402

# Tolerances of the equivalence (issue 15, item 3).
LOSS_RTOL = 1e-5
GRAD_TOL, GRAD_NORM_FLOOR = 1e-4, 1e-2
WEIGHT_ATOL, WEIGHT_SHARE = 1e-6, 0.995


@dataclass
class Comparison:
    """Ours against theirs after ``len(losses)`` steps."""

    losses: list[tuple[float, float]] = field(default_factory=list)  # (ours, theirs) per step
    lrs: list[tuple[float, float]] = field(default_factory=list)  # learning rate after each step
    grad_errors: dict[str, float] = field(default_factory=dict)  # first step: max |diff| / max(norm, floor)
    weight_share: float = 0.0  # share of head weights within WEIGHT_ATOL after the last step
    weight_max_diff: float = 0.0

    @property
    def loss_error(self) -> float:
        return max(abs(a - b) / abs(b) for a, b in self.losses)

    def failures(self) -> list[str]:
        wrong = [f"loss step {i + 1}: {a} vs {b}" for i, (a, b) in enumerate(self.losses) if abs(a - b) > LOSS_RTOL * abs(b)]
        wrong += [f"lr step {i + 1}: {a} vs {b}" for i, (a, b) in enumerate(self.lrs) if a != b]
        wrong += [f"gradient of {n}: {e:.2e} of its norm" for n, e in self.grad_errors.items() if e > GRAD_TOL]
        if self.weight_share < WEIGHT_SHARE:
            wrong.append(f"only {self.weight_share:.2%} of head weights within {WEIGHT_ATOL}")
        return wrong


def _heads(module) -> dict[str, torch.Tensor]:
    return {f"{part}.{n}": p for part in ("deform_net", "regressor") for n, p in getattr(module, part).named_parameters()}


def compare_training(model: AHIQ, dist: torch.Tensor, ref: torch.Tensor, labels: torch.Tensor, steps: int = 3) -> Comparison:
    """Train a copy of ``model``'s heads our way and another the authors' way, ``steps`` steps on one batch."""
    theirs = AuthorsPattern(copy.deepcopy(model))  # whole backbones with the same weights, its own heads
    ours = copy.deepcopy(model).train()  # the backbones must stay frozen and in eval mode all the same
    opt_o, (opt_t, sched_t) = build_optimizer(ours), authors_optimizer(theirs)
    sched_o = build_scheduler(opt_o)
    result = Comparison()
    for step in range(steps):
        loss_o = train_step(ours, opt_o, dist, ref, labels)
        sched_o.step()
        loss_t = authors_train_step(theirs, opt_t, sched_t, dist, ref, labels)
        result.losses.append((loss_o, loss_t))
        result.lrs.append((sched_o.get_last_lr()[0], sched_t.get_last_lr()[0]))
        if step == 0:  # gradients stay in .grad until the next step zeroes them
            mine = _heads(ours)
            result.grad_errors = {name: (mine[name].grad - p.grad).abs().max().item()
                                  / max(p.grad.norm().item(), GRAD_NORM_FLOOR) for name, p in _heads(theirs).items()}
    diffs = torch.cat([(a - b).abs().flatten() for a, b in zip(_heads(ours).values(), _heads(theirs).values())])
    result.weight_share = (diffs <= WEIGHT_ATOL).float().mean().item()
    result.weight_max_diff = diffs.max().item()
    return result


def real_batch(crop: int, positions=((0, 0), (80, 144), (384 - 224, 512 - 224))) -> tuple:
    """Three crop pairs ``(3, 3, crop, crop)`` of the KADID-10k mini images and their dmos, min-max normalised."""
    scores = {name: float(score) for name, _, score, _ in read_csv(KADID / "dmos.csv")[1:]}
    lo, hi = min(scores.values()), max(scores.values())
    names = ["I01_01_02.png", "I01_06_05.png", "I01_15_05.png"]
    to_tensor = lambda name: image_tensor(KADID / "images" / name)[0].float() / 255  # noqa: E731
    ref_image, windows = to_tensor("I01.png"), [(top * crop // 224, left * crop // 224) for top, left in positions]
    dist = torch.stack([to_tensor(name)[:, t:t + crop, x:x + crop] for name, (t, x) in zip(names, windows)])
    ref = torch.stack([ref_image[:, t:t + crop, x:x + crop] for t, x in windows])
    labels = torch.tensor([(scores[n] - lo) / (hi - lo) for n in names], dtype=torch.float32)
    return dist, ref, labels


def main(argv=None) -> int:
    p = parser(__doc__)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--deform_impl", default="sampled", choices=["sampled", "torchvision"])
    p.add_argument("--vit", default=None, help="timm ViT (default: the project's ViT-B/8)")
    p.add_argument("--cnn", default=None, help="timm ResNet (default: the project's ResNet-50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random backbone weights and the heads' init")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    config = ModelConfig(deform_impl=args.deform_impl, **{k: v for k in ("vit", "cnn") if (v := getattr(args, k))})
    model = build_ahiq(config, pretrained_backbones=False)
    dist, ref, labels = real_batch(args.crop)
    print(f"{config.vit} + {config.cnn}, random backbone weights, heads as initialised (seed {args.seed}); {len(labels)} "
          f"real {args.crop}x{args.crop} crop pairs, CPU fp32, deform_impl={args.deform_impl}; {machine()}", flush=True)
    result = compare_training(model, dist, ref, labels, args.steps)
    for i, ((a, b), (lr_a, lr_b)) in enumerate(zip(result.losses, result.lrs)):
        print(f"step {i + 1}: loss ours {a:.8f} theirs {b:.8f} (rel {abs(a - b) / abs(b):.1e}); "
              f"lr ours {lr_a:.6e} theirs {lr_b:.6e}")
    print("first-step gradients, max |ours - theirs| / max(norm, 1e-2):")
    for name, error in result.grad_errors.items():
        print(f"  {name:34s} {error:.2e}")
    print(f"head weights within {WEIGHT_ATOL} after {args.steps} steps: {result.weight_share:.4%} "
          f"(max diff {result.weight_max_diff:.2e})")
    wrong = result.failures()
    print("PASS: within the suite's tolerances" if not wrong else "FAIL: " + "; ".join(wrong))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
