"""Speed of scoring and training against the authors' computation pattern, measured in one run.

    python benchmarks/speed.py                      # CUDA if present: 288x288 pairs, 20 crops, batch 4 and 32
    python benchmarks/speed.py --device cpu         # CPU defaults are smaller (see --help)

The authors' pattern (``benchmarks/authors_pattern.py``) against ours in fp32 and bf16, same seeded random weights:
pairs/s, the ratio, peak memory, the largest score difference. The ``dataset`` case scores 1 reference x 8 PNG files,
pair by pair and with the reference's side reused."""
from __future__ import annotations

import contextlib
import functools
import sys
import tempfile
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.authors_pattern import AuthorsPattern  # noqa: E402
from benchmarks.common import image_tensor, machine, parser, print_table, random_model, timed  # noqa: E402
from ahiq.data.crops import crop_positions  # noqa: E402
from ahiq.engine.device import precision_context, resolve_device  # noqa: E402
from ahiq.engine.scoring import crop_batch, score_pairs  # noqa: E402
from ahiq.models.config import SEED  # noqa: E402


def table_rows(task: str, n: int, timings: dict[str, tuple]) -> list[list[str]]:
    """``[task, path, pairs/s, vs authors, peak GiB, max abs score diff]`` per path, the authors' first."""
    base, t_base, _ = next(iter(timings.values()))
    return [[task, path, f"{n / t:.2f}", f"{t_base / t:.2f}x", f"{mem:.2f}", "nan" if out is None
             else f"{(out - base).abs().max().item():.2e}"] for path, (out, t, mem) in timings.items()]


def scoring(model, reference, images, positions, crop, device, args) -> list[list[str]]:
    dist, ref = images

    def authors():
        return torch.stack([reference.score_image(d[None], r[None], positions, crop)[0] for d, r in zip(dist, ref)])

    timings = {"authors fp32": timed(authors, device, 1)}
    print(f"authors' scores: {[round(v, 4) for v in timings['authors fp32'][0].tolist()]}")
    for precision in ("fp32", "bf16"):
        net = torch.compile(model) if args.compile else model

        @torch.inference_mode()
        def ours(net=net, precision=precision):
            with precision_context(precision, device):
                d, r = (crop_batch(list(side), [positions] * len(side), crop) for side in (dist, ref))
                return net(d, r).float().view(len(dist), -1).mean(1)

        timings[f"ours {precision}" + (" compiled" if args.compile else "")] = timed(ours, device, args.repeats)
    return table_rows("score", len(dist), timings)


def training(model, reference, batch, crop, device, args) -> list[list[str]]:
    gen = torch.Generator().manual_seed(0)
    dist = torch.rand(batch, 3, crop, crop, generator=gen).to(device)
    ref = (dist + 0.1 * torch.rand(batch, 3, crop, crop, generator=gen).to(device)).clamp(0, 1)
    target = torch.rand(batch, generator=gen).to(device)
    heads = [*model.deform_net.parameters(), *model.regressor.parameters()]

    def step(opt, net, precision=None):  # the authors' pattern runs without precision_context (TF32 as torch sets it)
        with precision_context(precision, device) if precision else contextlib.nullcontext():
            out = net(dist, ref)
        loss = torch.nn.functional.mse_loss(out.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for backbone in (reference.vit, reference.resnet):
        backbone.requires_grad_(True)  # their backbones were not frozen: backward ran through them
    opt = torch.optim.Adam(heads, lr=1e-6)
    timings = {"authors fp32": timed(lambda: step(opt, reference.predict), device, args.train_steps)}
    for backbone in (reference.vit, reference.resnet):
        backbone.requires_grad_(False).zero_grad(set_to_none=True)
    for precision in ("fp32", "bf16"):
        opt = torch.optim.Adam(heads, lr=1e-6, fused=device.type == "cuda")
        net = torch.compile(model) if args.compile else model
        timings[f"ours {precision}"] = timed(functools.partial(step, opt, net, precision), device, args.train_steps)
    return table_rows(f"train b{batch}", batch, timings)


def dataset(model, reference, reference_image, crop, device, args) -> list[list[str]]:
    """1 reference x N distorted image files, five crops: authors, pair by pair, reference side reused."""
    gen, reference_image = torch.Generator().manual_seed(3), reference_image.cpu()  # (3, H, W) uint8 and noisy copies
    noisy = [(reference_image.int() + torch.randint(-4 * k, 4 * k + 1, reference_image.shape, generator=gen)).clamp(0, 255)
             for k in range(1, args.dataset_images + 1)]
    names = ["I01.png", *(f"I01_{k:02d}_01.png" for k in range(1, args.dataset_images + 1))]
    with tempfile.TemporaryDirectory() as tmp:
        for name, image in zip(names, [reference_image, *noisy]):
            cv2.imwrite(f"{tmp}/{name}", image.to(torch.uint8).permute(1, 2, 0).flip(-1).numpy().copy())
        pairs = [(Path(tmp) / name, Path(tmp) / "I01.png") for name in names[1:]]
        positions = crop_positions("five", args.image, args.image, crop, seed=SEED)

        def authors(todo):
            return torch.stack([reference.score_image(image_tensor(d, device), image_tensor(r, device), positions,
                                                      crop)[0] for d, r in todo]).cpu()

        def ours(todo, precision, reuse):
            scored = score_pairs(model, todo, "five", crop, batch_size=20, precision=precision, progress=False,
                                 reuse_reference=reuse)
            return torch.tensor([r.score for r in scored])

        def on_pairs(fn):  # warm-up on one pair: the whole set once more would double a CPU run
            return timed(lambda: fn(pairs), device, warm_up=lambda: fn(pairs[:1]))

        timings = {"authors fp32": on_pairs(authors)}
        for precision in ("fp32", "bf16"):
            for reuse, label in ((False, "pair by pair"), (True, "reference reused")):
                timings[f"ours {precision} {label}"] = on_pairs(functools.partial(ours, precision=precision, reuse=reuse))
            reused, each = (timings[f"ours {precision} {label}"][0] for label in ("reference reused", "pair by pair"))
            print(f"dataset 1x{len(pairs)} {precision}: max |reused - pair by pair| = "
                  f"{(reused - each).abs().max().item():.2e}", flush=True)
            with torch.inference_mode(), precision_context(precision, device):  # a row per crop: measure one
                crops = crop_batch([image_tensor(pairs[0][1], device)[0]], [positions[:1]], crop)
                per_crop = model.encode_reference(crops).nbytes
            print(f"reference cache ({crop}x{crop} crops, {precision}, one reference held): five crops "
                  f"{5 * per_crop / 2**20:.1f} MiB, twenty crops {20 * per_crop / 2**20:.1f} MiB", flush=True)
    return table_rows(f"dataset 1x{len(pairs)}", len(pairs), timings)


def parse(argv):
    p = parser(__doc__)
    p.add_argument("--device", default="auto")
    p.add_argument("--pairs", type=int, default=None, help="pairs scored (default 8 on CUDA, 1 on CPU)")
    p.add_argument("--image", type=int, default=288, help="image side (PIPAL: 288)")
    p.add_argument("--crops", type=int, default=None, help="random crops per pair (default 20 on CUDA, 5 on CPU)")
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--train_batches", default=None, help="comma list (default 4,32 on CUDA, 4 on CPU)")
    p.add_argument("--train_steps", type=int, default=None, help="timed steps (default 5 on CUDA, 1 on CPU)")
    p.add_argument("--repeats", type=int, default=None, help="timed scoring repeats (default 3 on CUDA, 1 on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile our model")
    p.add_argument("--cases", default="score,train,dataset", help="comma list of score, train, dataset")
    p.add_argument("--dataset_images", type=int, default=8, help="distorted images of the one reference (dataset)")
    args = p.parse_args(argv)
    args.cases = set(args.cases.split(","))
    if args.cases - {"score", "train", "dataset"}:
        p.error(f"--cases {args.cases}: choose from score, train, dataset")
    args.device = resolve_device(args.device)
    for name, on_gpu, on_cpu in (("pairs", 8, 1), ("crops", 20, 5), ("train_steps", 5, 1), ("repeats", 3, 1),
                                 ("train_batches", "4,32", "4")):
        setattr(args, name, getattr(args, name) or (on_gpu if args.device.type == "cuda" else on_cpu))
    args.train_batches = [int(b) for b in args.train_batches.split(",")]
    return args


def main(argv=None) -> None:
    args = parse(argv)
    device = args.device
    print(f"device: {machine(device)}; {args.pairs} pairs of {args.image}x{args.image}, {args.crops} random crops of "
          f"{args.crop}; dataset case: 1 reference x {args.dataset_images} distorted, five crops; random weights",
          flush=True)
    model = random_model().to(device)
    reference = AuthorsPattern(model).to(device)
    gen = torch.Generator().manual_seed(2)
    dist = torch.randint(0, 256, (args.pairs, 3, args.image, args.image), dtype=torch.uint8, generator=gen)
    ref = (dist.int() + torch.randint(-20, 21, dist.shape, generator=gen)).clamp(0, 255).to(torch.uint8)
    dist, ref = dist.to(device), ref.to(device)
    positions = crop_positions(f"random:{args.crops}", args.image, args.image, args.crop, seed=SEED)
    rows = scoring(model, reference, (dist, ref), positions, args.crop, device, args) if "score" in args.cases else []
    if "dataset" in args.cases:
        rows += dataset(model, reference, ref[0], args.crop, device, args)
    with contextlib.suppress(torch.cuda.OutOfMemoryError):
        for batch in args.train_batches if "train" in args.cases else []:
            rows += training(model, reference, batch, args.crop, device, args)
    print_table(["task", "path", "pairs/s", "vs authors", "peak GiB", "max abs score diff"], rows)


if __name__ == "__main__":
    main()
