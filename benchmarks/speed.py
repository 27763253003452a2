"""Speed of scoring and training against the authors' computation pattern, measured in one run.

    python benchmarks/speed.py                      # CUDA if present: 288x288 pairs, 20 crops, batch 4 and 32
    python benchmarks/speed.py --device cpu         # CPU defaults are smaller (see --help)

(a) ``authors``: whole timm backbones with hooks, crop by crop, fp32, offsets twice, torchvision deform
(``benchmarks/authors_pattern.py``); training also back-propagates into the backbones, as their code did.
(b) ours in fp32 and bf16: truncated backbones, all crops of a batch in one forward, offsets once, the
sampled deformable convolution (optionally ``--compile``). All models share seeded random weights; the
table gives pairs/s, the ratio to (a), peak memory, and the largest score difference to (a).

The ``dataset`` case scores 1 reference x 8 distorted images (PNG files, five crops, ``score_pairs`` with
batch 4) the authors' way, pair by pair (``reuse_reference=False``) and with the reference's side computed
once and reused, and prints the size of one reference's cache for five and twenty crops.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.authors_pattern import AuthorsPattern  # noqa: E402
from ahiq.data.crops import crop_positions  # noqa: E402
from ahiq.models.ahiq import build_ahiq  # noqa: E402
from ahiq.engine.device import describe_precision, precision_context, resolve_device  # noqa: E402
from ahiq.data.images import read_image  # noqa: E402
from ahiq.engine.scoring import crop_batch, score_pairs  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")


def _timed(fn, device, repeats: int):
    fn()  # warm-up (cuDNN autotune, compile)
    _sync(device)
    _reset_peak(device)
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    _sync(device)
    return out, (time.perf_counter() - start) / repeats, _peak_gib(device)


def scoring(model, reference, images, positions, crop, device, args) -> list[tuple]:
    dist, ref = images
    rows = []

    def authors():
        return torch.stack([reference.score_image(d[None], r[None], positions, crop)[0] for d, r in zip(dist, ref)])

    base, t_base, mem_base = _timed(authors, device, 1)
    rows.append(("score", "authors fp32", len(dist) / t_base, 1.0, mem_base, base.tolist()))
    for precision in ("fp32", "bf16"):
        net = torch.compile(model) if args.compile else model

        @torch.inference_mode()
        def ours(net=net, precision=precision):
            with precision_context(precision, device):
                d = crop_batch(list(dist), [positions] * len(dist), crop)
                r = crop_batch(list(ref), [positions] * len(ref), crop)
                return net(d, r).float().view(len(dist), -1).mean(1)

        out, t, mem = _timed(ours, device, args.repeats)
        rows.append(("score", f"ours {precision}" + (" compiled" if args.compile else ""), len(dist) / t,
                     t_base / t, mem, (out - base).abs().max().item()))
    return rows


def training(model, reference, batch, crop, device, args) -> list[tuple]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    dist = torch.rand(batch, 3, crop, crop, generator=gen).to(device)
    ref = (dist + 0.1 * torch.rand(batch, 3, crop, crop, generator=gen).to(device)).clamp(0, 1)
    target = torch.rand(batch, generator=gen).to(device)
    heads = list(model.deform_net.parameters()) + list(model.regressor.parameters())

    def authors_step():
        for p in list(reference.vit.parameters()) + list(reference.resnet.parameters()):
            p.requires_grad_(True)  # their backbones were not frozen: backward ran through them
        with torch.enable_grad():
            pred = reference.score_crop.__wrapped__(reference, dist, ref)
            loss = torch.nn.functional.mse_loss(pred, target)
            opt_a.zero_grad()
            loss.backward()
            opt_a.step()

    opt_a = torch.optim.Adam(heads, lr=1e-6)
    _, t_base, mem_base = _timed(authors_step, device, args.train_steps)
    for p in list(reference.vit.parameters()) + list(reference.resnet.parameters()):
        p.requires_grad_(False)
        p.grad = None
    rows.append((f"train b{batch}", "authors fp32", batch / t_base, 1.0, mem_base, float("nan")))
    for precision in ("fp32", "bf16"):
        opt = torch.optim.Adam(heads, lr=1e-6, fused=device.type == "cuda")
        net = torch.compile(model) if args.compile else model

        def step(net=net, precision=precision, opt=opt):
            with precision_context(precision, device):
                pred = net(dist, ref)
            loss = torch.nn.functional.mse_loss(pred.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        _, t, mem = _timed(step, device, args.train_steps)
        rows.append((f"train b{batch}", f"ours {precision}", batch / t, t_base / t, mem, float("nan")))
    return rows


def dataset(model, reference, reference_image, crop, device, args) -> list[tuple]:
    """1 reference x N distorted image files, five crops: authors, pair by pair, reference side reused."""
    import cv2

    rows = []
    gen = torch.Generator().manual_seed(3)
    with tempfile.TemporaryDirectory() as tmp:
        ref_path = Path(tmp) / "I01.png"
        cv2.imwrite(str(ref_path), reference_image.permute(1, 2, 0).flip(-1).cpu().numpy().copy())
        pairs = []
        for k in range(args.dataset_images):  # distortions of growing strength
            noise = torch.randint(-4 * (k + 1), 4 * (k + 1) + 1, reference_image.shape, generator=gen)
            image = (reference_image.cpu().int() + noise).clamp(0, 255).to(torch.uint8)
            pairs.append((Path(tmp) / f"I01_{k + 1:02d}_01.png", ref_path))
            cv2.imwrite(str(pairs[-1][0]), image.permute(1, 2, 0).flip(-1).numpy().copy())
        positions = crop_positions("five", args.image, args.image, crop)

        def tensor(path):
            return torch.from_numpy(read_image(path)).permute(2, 0, 1)[None].to(device)

        def authors(todo):
            return torch.stack([reference.score_image(tensor(d), tensor(r), positions, crop)[0] for d, r in todo]).cpu()

        def ours(todo, precision, reuse):
            return torch.tensor([r.score for r in score_pairs(model, todo, "five", crop, batch_size=20,
                                                              precision=precision, progress=False,
                                                              reuse_reference=reuse)])

        def timed(fn):
            fn(pairs[:1])  # warm-up on one pair: the whole set once more would double a CPU run
            _sync(device)
            _reset_peak(device)
            start = time.perf_counter()
            out = fn(pairs)
            _sync(device)
            return out, time.perf_counter() - start, _peak_gib(device)

        name = f"dataset 1x{len(pairs)}"
        base, t_base, mem = timed(authors)
        rows.append((name, "authors fp32", len(pairs) / t_base, 1.0, mem, 0.0))
        for precision in ("fp32", "bf16"):
            scores = {}
            for reuse, label in ((False, "pair by pair"), (True, "reference reused")):
                scores[reuse], t, mem = timed(functools.partial(ours, precision=precision, reuse=reuse))
                rows.append((name, f"ours {precision} {label}", len(pairs) / t, t_base / t, mem,
                             (scores[reuse] - base).abs().max().item()))
            print(f"{name} {precision}: max |reused - pair by pair| = "
                  f"{(scores[True] - scores[False]).abs().max().item():.2e}", flush=True)
        for precision in ("fp32", "bf16"):  # the cache is one row per crop: measure one crop
            with torch.inference_mode(), precision_context(precision, device):
                per_crop = model.encode_reference(crop_batch([tensor(ref_path)[0]], [positions[:1]], crop)).nbytes
            print(f"reference cache ({crop}x{crop} crops, {precision}, one reference held): five crops "
                  f"{5 * per_crop / 2**20:.1f} MiB, twenty crops {20 * per_crop / 2**20:.1f} MiB", flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    cases = set(args.cases.split(","))
    if cases - {"score", "train", "dataset"}:
        p.error(f"--cases {args.cases}: choose from score, train, dataset")
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    args.pairs = args.pairs or (8 if gpu else 1)
    args.crops = args.crops or (20 if gpu else 5)
    args.train_steps = args.train_steps or (5 if gpu else 1)
    args.repeats = args.repeats or (3 if gpu else 1)
    batches = [int(b) for b in (args.train_batches or ("4,32" if gpu else "4")).split(",")]
    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; {describe_precision('bf16', device)}; torch {torch.__version__}; "
          f"{args.pairs} pairs of {args.image}x{args.image}, "
          f"{args.crops} random crops of {args.crop}; dataset case: 1 reference x {args.dataset_images} distorted, "
          f"five crops; random weights", flush=True)

    torch.manual_seed(0)
    model = build_ahiq(pretrained_backbones=False)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for prm in list(model.deform_net.parameters()) + list(model.regressor.parameters()):
            scale = (1.0 / prm[0].numel()) ** 0.5 if prm.dim() > 1 else 0.01  # small biases: no dead ReLUs
            prm.copy_(torch.randn(prm.shape, generator=gen) * scale)
    model = model.to(device).eval()
    reference = AuthorsPattern(model).to(device)
    gen = torch.Generator().manual_seed(2)
    dist = torch.randint(0, 256, (args.pairs, 3, args.image, args.image), dtype=torch.uint8, generator=gen)
    noise = torch.randint(-20, 21, dist.shape, generator=gen)
    ref = (dist.int() + noise).clamp(0, 255).to(torch.uint8)
    dist, ref = dist.to(device), ref.to(device)
    positions = crop_positions(f"random:{args.crops}", args.image, args.image, args.crop, seed=1919)

    rows = []
    if "score" in cases:
        rows = scoring(model, reference, (dist, ref), positions, args.crop, device, args)
        print(f"authors' scores: {[round(v, 4) for v in rows[0][-1]]}")
        rows[0] = rows[0][:-1] + (0.0,)
    if "dataset" in cases:
        rows += dataset(model, reference, ref[0], args.crop, device, args)
    with contextlib.suppress(torch.cuda.OutOfMemoryError):
        for batch in batches if "train" in cases else []:
            rows += training(model, reference, batch, args.crop, device, args)
    print("\n| task | path | pairs/s | vs authors | peak GiB | max abs score diff |\n|---|---|---|---|---|---|")
    for task, path, rate, ratio, mem, diff in rows:
        print(f"| {task} | {path} | {rate:.2f} | {ratio:.2f}x | {mem:.2f} | {diff:.2e} |")


if __name__ == "__main__":
    main()
