"""Training: splits, data check, the epoch loop, validation, checkpoints, resume, logging, DDP.

Flow: options -> :func:`data.splits.prepare_splits` (dataset, reference-disjoint split, saved ``split.json``) ->
:class:`Trainer` (model; Adam with the authors' two groups, cosine schedule stepped per iteration and the
step itself from :mod:`engine.training`) ->
``run()``: per epoch train, validate every ``val_freq`` epochs, write ``last.pth`` and ``best.pth``.
Under ``torchrun`` each process trains on its shard (DistributedSampler); validation scores each pair
once on some rank and gathers the predictions; rank 0 alone writes files.
"""
from __future__ import annotations

import argparse
import logging
import math
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from data.datasets import CropPairs, EpochSampler, ScoreNorm, describe, screen_pairs
from data.splits import prepare_splits
from engine.device import RunContext, describe_precision, seed_everything
from engine.scoring import reference_order, score_pairs
from engine.training import build_optimizer, build_scheduler, step_loss
from models.ahiq import AHIQ, ModelConfig, build_ahiq
from models.checkpoint import load_heads, read_checkpoint, save_checkpoint
from utils.errors import UserError
from utils.io import check_writable, load_torch_file, remove_stale_temps, save_options
from utils.metrics import format_metrics, iqa_metrics


BEST_RULES = ("sum", "either")


def improves(metrics: dict[str, float], best: dict[str, float], rule: str = "sum") -> bool:
    """Whether validation ``metrics`` make a new best checkpoint over ``best`` (the last best's metrics).

    ``sum``: SRCC + PLCC (``main``) rose. ``either``: the release's rule, SRCC or PLCC rose, each against
    the values of the last saved epoch, starting from 0 (so an epoch can be "best" with a lower sum).
    """
    if rule == "sum":
        return metrics["main"] > best.get("main", -math.inf)
    if rule == "either":
        return metrics["SRCC"] > best.get("SRCC", 0.0) or metrics["PLCC"] > best.get("PLCC", 0.0)
    raise ValueError(f"rule={rule}: use one of {', '.join(BEST_RULES)}")


def _rng_state() -> dict:
    """The Python, numpy and torch RNG states as tensors and plain values (a checkpoint loads with weights_only)."""
    np_state = np.random.get_state(legacy=False)
    np_state["state"] = {"key": np_state["state"]["key"].tolist(), "pos": int(np_state["state"]["pos"])}
    state = {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # a dict (ours) or the legacy tuple of checkpoints written before
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Trains ``deform_net`` and ``regressor`` of an :class:`AHIQ` model; see the module docstring."""

    def __init__(self, opt: argparse.Namespace, ctx: RunContext):
        self.opt, self.ctx = opt, ctx
        if opt.time_limit and ctx.world_size > 1:
            raise UserError("--time_limit is for single-process runs (ranks would stop at different steps)")
        self.run_dir = Path(opt.checkpoints_dir) / opt.name
        stale = []
        # The outermost folder this run creates (the run folder, or a new --checkpoints_dir above it).
        fresh = next((d for d in reversed([self.run_dir, *self.run_dir.parents]) if not d.exists()), None)
        fresh = fresh if ctx.main else None
        if ctx.main:
            check_writable(self.run_dir, "run folder ", folder=True)  # before any data or model work
            stale = remove_stale_temps(self.run_dir)
        self.log = self._logger()
        if stale:
            self.log.info(f"removed {len(stale)} temporary file(s) of interrupted writes: "
                          f"{', '.join(p.name for p in stale)}")
        self.writer = None
        try:
            self._set_up()
        except BaseException:  # a run whose set-up fails leaves no (nearly empty) run folder behind
            self.close()
            if fresh is not None:
                shutil.rmtree(fresh, ignore_errors=True)
            raise

    def _set_up(self) -> None:
        """Data, model, optimiser, schedule, resume state, loader and writer, from the options."""
        opt, ctx = self.opt, self.ctx
        # Files named by the user are read (and refused, if unsafe or damaged) before any data or model work.
        self.init_heads = read_checkpoint(opt.checkpoint) if opt.checkpoint else None
        self.resume_from = self._read_last() if opt.resume else None
        seed_everything(opt.seed)
        self.parts, self.split_info = prepare_splits(opt, self.run_dir if ctx.main else None)
        if not self.parts["train"] or not self.parts["val"]:
            raise UserError(f"need training and validation pairs; got {describe(self.parts['train'])} and "
                            f"{describe(self.parts['val'])} (check --split_ratio / --val_list)")
        self._screen_data()
        if opt.val_drop_last and len(self.parts["val"]) < opt.batch_size:
            raise UserError(f"--val_drop_last with --batch_size {opt.batch_size} leaves no validation pair of "
                            f"{len(self.parts['val'])}; lower --batch_size or drop --val_drop_last")
        train_scores = [p.score for p in self.parts["train"]]
        self.norm = ScoreNorm.fit(train_scores, "none" if opt.score_norm == "none" else "minmax")
        self.label_range = [float(min(train_scores)), float(max(train_scores))]
        self.model = self._build_model()
        self.optimizer = build_optimizer(self.model, opt.learning_rate, opt.weight_decay, opt.feature_lr_scale)
        self.sampler = EpochSampler(len(self.parts["train"]), opt.seed, ctx.rank, ctx.world_size)
        steps = math.ceil(len(self.sampler) / opt.batch_size)
        self.steps_per_epoch = min(steps, opt.max_steps) if opt.max_steps else steps
        self.scheduler = build_scheduler(self.optimizer, opt.T_max, opt.eta_min, opt.n_epoch * self.steps_per_epoch)
        self.start_epoch, self.best = 0, {"main": -math.inf}
        self.start_metrics: dict | None = None  # validation before any step (--validate_first)
        self.position: dict | None = None  # inside an epoch: {"epoch", "step", "loss_sum", "count"}
        if self.resume_from is not None:
            self._resume(*self.resume_from)
        self.net = self.model
        if ctx.world_size > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                broadcast_buffers=False)
        if opt.compile:
            self.net = torch.compile(self.net)
        self.train_set = CropPairs(self.parts["train"], self.norm([p.score for p in self.parts["train"]]),
                                   opt.crop_size, opt.flip, opt.seed, opt.train_crop_rule)
        self.loader = self._make_loader()
        if ctx.main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"))
            save_options({"script": "train", **vars(opt)}, self.run_dir)  # a valid --config file

    # ----------------------------------------------------------------------------------------- setup
    def _logger(self) -> logging.Logger:
        log = logging.getLogger(f"ahiq.train.{id(self)}")
        log.setLevel(logging.INFO)
        log.propagate = False
        if self.ctx.main:
            to_file = logging.FileHandler(self.run_dir / "train.log")
            to_file.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
            to_screen = logging.StreamHandler(sys.stdout)
            to_screen.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(to_file)
            log.addHandler(to_screen)
        return log

    def close(self) -> None:
        """Close the run's log file and TensorBoard writer (several trainers may run in one process)."""
        for handler in list(self.log.handlers):
            handler.close()
            self.log.removeHandler(handler)
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _screen_data(self) -> None:
        """The start-up data check (every image decoded once); bad pairs stop training unless --skip_bad."""
        warned: set[str] = set()
        for name in ("train", "val"):
            self.parts[name] = screen_pairs(self.parts[name], self.opt.crop_size, self.opt.skip_bad, part=name,
                                            report=self.log.info, warned=warned)

    def _build_model(self) -> AHIQ:
        opt = self.opt
        model = build_ahiq(ModelConfig.from_dict(vars(opt)), opt.pretrained_backbones, opt.vit_weights, opt.cnn_weights,
                           seed=opt.seed)
        if self.init_heads is not None:
            deform, regressor, _ = self.init_heads
            load_heads(model, deform, regressor, opt.checkpoint)
            self.log.info(f"initialised fusion and head from {opt.checkpoint}")
        return model.to(self.ctx.device)

    def _read_last(self) -> tuple[Path, dict] | None:
        """``(path, contents)`` of the run's ``last.pth`` for ``--resume``, None when there is none yet."""
        path = self.run_dir / "last.pth"
        if not path.is_file():
            self.log.info(f"resume: {path} not found; starting from epoch 1")
            return None
        ckpt = load_torch_file(path, "checkpoint")
        needed = ("deform_net_model_state_dict", "regressor_model_state_dict", "optimizer_state_dict",
                  "scheduler_state_dict", "epoch", "ahiq")
        missing = [k for k in needed if k not in ckpt] if isinstance(ckpt, dict) else list(needed)
        if missing:
            raise UserError(f"{path}: not a last.pth written by train.py (lacks {', '.join(missing)}); move it "
                            "away to start over, or drop --resume")
        return path, ckpt

    def _resume(self, path: Path, ckpt: dict) -> None:
        load_heads(self.model, ckpt["deform_net_model_state_dict"], ckpt["regressor_model_state_dict"], path)
        saved_groups = len(ckpt["optimizer_state_dict"].get("param_groups", []))
        if saved_groups != len(self.optimizer.param_groups):
            raise UserError(f"{path}: its optimiser has {saved_groups} parameter groups, these options make "
                            f"{len(self.optimizer.param_groups)}; resume with the run's own --feature_lr_scale "
                            "(drop the option: --resume reloads the run's options)")
        try:
            self.optimizer.load_state_dict(ckpt["optimizer_state_dict"])
            self.scheduler.load_state_dict(ckpt["scheduler_state_dict"])
            self.start_epoch = int(ckpt["epoch"]) + 1
            self.best = ckpt.get("best", self.best)
            self.start_metrics = ckpt.get("start_metrics")
            self.norm = ScoreNorm.from_dict(ckpt["ahiq"].get("score_norm"))
            rng = (ckpt.get("rng") or {}).get(self.ctx.rank)
            if rng is not None:
                _set_rng_state(rng)
        except (KeyError, ValueError, TypeError, AttributeError, RuntimeError) as err:
            raise UserError(f"{path}: its training state does not load ({type(err).__name__}: {err}); move it "
                            "away to start over, or drop --resume") from None
        self.position = ckpt.get("position")
        if self.position is not None:
            self.start_epoch = int(self.position["epoch"])
            self.log.info(f"resumed from {path}: inside epoch {self.start_epoch + 1}, after step "
                          f"{self.position['step']} of {self.steps_per_epoch}; best main={self.best['main']:.4f}")
        else:
            self.log.info(f"resumed from {path}: epoch {self.start_epoch} done, best main={self.best['main']:.4f}")

    # ----------------------------------------------------------------------------------------- loop
    def _make_loader(self) -> DataLoader:
        workers = self.opt.num_workers
        return DataLoader(self.train_set, batch_size=self.opt.batch_size, sampler=self.sampler, num_workers=workers,
                          collate_fn=CropPairs.collate,
                          pin_memory=self.ctx.device.type == "cuda", persistent_workers=workers > 0,
                          prefetch_factor=4 if workers else None)

    def out_of_time(self, ahead: float = 0.0) -> bool:
        """Whether ``--time_limit`` is (or, ``ahead`` seconds from now, will be) used up."""
        return bool(self.opt.time_limit) and time.perf_counter() + ahead - self.started > self.opt.time_limit

    def train_epoch(self, epoch: int) -> float:
        """Train one epoch (or its rest, when :attr:`position` says where a stopped run left it); the mean loss.

        When ``--time_limit`` runs out inside the epoch, :attr:`position` is set to where it stopped."""
        self.net.train()
        device = self.ctx.device
        resumed = self.position if self.position is not None and int(self.position["epoch"]) == epoch else None
        first = int(resumed["step"]) if resumed else 0
        self.position = None
        # The order of an epoch is a function of (seed, epoch): a resumed epoch skips the batches already trained.
        self.sampler.set_epoch(epoch, skip=first * self.opt.batch_size)
        loader = self.loader
        steps = self.steps_per_epoch
        bar = tqdm(total=steps, initial=first, desc=f"epoch {epoch + 1}/{self.opt.n_epoch}", unit="step",
                   disable=not (self.ctx.main and self.opt.progress), leave=False, file=sys.stdout)
        loss_sum = resumed["loss_sum"].to(device) if resumed else torch.zeros((), device=device)
        count = int(resumed["count"]) if resumed else 0
        for step, (dist_img, ref_img, target, _) in enumerate(loader, start=first):
            if step >= steps:
                break
            if self.out_of_time():
                self.position = {"epoch": epoch, "step": step, "loss_sum": loss_sum.detach().cpu(), "count": count}
                break
            dist_img = dist_img.to(device, non_blocking=True)
            ref_img = ref_img.to(device, non_blocking=True)
            target = target.to(device, non_blocking=True)
            loss = step_loss(self.model, self.optimizer, dist_img, ref_img, target, self.opt.precision, net=self.net,
                             grad_clip=self.opt.grad_clip, strict_fp32=self.opt.strict_fp32)
            self.scheduler.step()
            loss_sum += loss * len(target)
            count += len(target)
            if step % 10 == 0 or step == steps - 1:  # the only host syncs of the loop
                value = loss.item()
                if not math.isfinite(value):
                    raise UserError(f"training diverged: loss is {value} at epoch {epoch + 1} step {step + 1}; "
                                    "lower --learning_rate or set --grad_clip")
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
            bar.update(1)
        bar.close()
        if self.ctx.world_size > 1:
            total = torch.stack([loss_sum, torch.tensor(float(count), device=device)])
            dist.all_reduce(total)
            loss_sum, count = total[0], int(total[1].item())
        return float(loss_sum.item() / max(count, 1))

    def validation_pairs(self) -> list:
        """The pairs validation scores: all of them, or with ``val_drop_last`` (the release's loader) all but
        the last partial batch of ``batch_size``."""
        pairs = self.parts["val"]
        if self.opt.val_drop_last:
            pairs = pairs[:len(pairs) - len(pairs) % self.opt.batch_size]
        return pairs

    def validation_predictions(self) -> list[float]:
        """Predictions for :meth:`validation_pairs`, in order: the model in eval mode, ``val_crops`` per pair,
        each pair scored once across ranks (sharded, then gathered). Each rank takes a contiguous run of the
        pairs grouped by reference, so it encodes each of its references once (``score_pairs`` reuses a
        reference's side for all its distorted images)."""
        pairs = self.validation_pairs()
        grouped = reference_order([(p.dist, p.ref) for p in pairs])
        rank, world = self.ctx.rank, self.ctx.world_size
        mine = grouped[len(pairs) * rank // world:len(pairs) * (rank + 1) // world]
        self.model.eval()
        results = score_pairs(self.model, [(pairs[i].dist, pairs[i].ref) for i in mine], self.opt.val_crops,
                              self.opt.crop_size, self.opt.seed, batch_size=max(1, self.opt.batch_size),
                              precision=self.opt.precision, num_workers=self.opt.num_workers, progress=False)
        preds = {i: r.score for i, r in zip(mine, results)}
        if self.ctx.world_size > 1:
            gathered: list = [None] * self.ctx.world_size
            dist.all_gather_object(gathered, preds)
            preds = {i: s for part in gathered for i, s in part.items()}
        if sorted(preds) != list(range(len(pairs))):
            raise RuntimeError(f"validation scored {len(preds)} of {len(pairs)} pairs")
        return [preds[i] for i in range(len(pairs))]

    def validate(self) -> dict[str, float]:
        """Metrics of :meth:`validation_predictions` against the labels, normalised as in training
        (``per_split``: min-max within the validation pairs, as the release did per label file)."""
        predictions = self.validation_predictions()
        labels = [p.score for p in self.validation_pairs()]
        # per_split fits on the whole validation file, as the release did before its loader dropped a batch
        norm = ScoreNorm.fit([p.score for p in self.parts["val"]]) if self.opt.score_norm == "per_split" else self.norm
        return iqa_metrics(predictions, norm(labels))

    def checkpoint_meta(self, epoch: int) -> dict:
        return {"score_norm": self.norm.to_dict(), "label_range": self.label_range, "split": self.split_info,
                "epoch": epoch,
                "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self.opt).items()}}

    def save(self, filename: str, epoch: int, loss: float, metrics: dict | None) -> None:
        """Write ``filename`` in the run folder: weights, optimiser, scheduler, RNG, best, and :attr:`position`
        (None at an epoch's end); ``epoch`` is the index of the last finished epoch."""
        rng = {self.ctx.rank: _rng_state()}
        if self.ctx.world_size > 1:
            gathered: list = [None] * self.ctx.world_size
            dist.all_gather_object(gathered, rng)
            rng = {k: v for part in gathered for k, v in part.items()}
        if not self.ctx.main:
            return
        save_checkpoint(self.run_dir / filename, self.model, self.checkpoint_meta(epoch), epoch=epoch, loss=loss,
                        optimizer_state_dict=self.optimizer.state_dict(),
                        scheduler_state_dict=self.scheduler.state_dict(), best=self.best, metrics=metrics, rng=rng,
                        start_metrics=self.start_metrics, position=self.position)

    def run(self) -> dict[str, float]:
        opt, ctx = self.opt, self.ctx
        self.log.info(f"run: world_size={ctx.world_size} device={ctx.device} "
                      f"precision={describe_precision(opt.precision, ctx.device)} "
                      f"name={opt.name} dataset={opt.dataset} train={describe(self.parts['train'])} "
                      f"val={describe(self.parts['val'])} crop={opt.crop_size} batch={opt.batch_size} "
                      f"epochs={self.start_epoch + 1}..{opt.n_epoch}")
        self.started = time.perf_counter()
        if opt.validate_first and self.start_epoch == 0 and self.position is None:
            self.start_metrics = self.validate()
            self.log.info(f"epoch 0/{opt.n_epoch} (before training) val {format_metrics(self.start_metrics)}")
        for epoch in range(self.start_epoch, opt.n_epoch):
            start = time.perf_counter()
            loss = self.train_epoch(epoch)
            if self.position is not None:  # --time_limit ran out inside the epoch: keep the exact position
                self.save("last.pth", epoch - 1, loss, None)
                self.log.info(f"time limit of {opt.time_limit:.0f}s reached inside epoch {epoch + 1}, after step "
                              f"{self.position['step']} of {self.steps_per_epoch}; saved that position in "
                              f"{self.run_dir / 'last.pth'} (--resume continues from it exactly)")
                break
            lr = self.scheduler.get_last_lr()[0]
            metrics = None
            line = f"epoch {epoch + 1}/{opt.n_epoch} loss={loss:.5f} lr={lr:.3e}"
            # Another epoch would overrun --time_limit: stop after this one. Which epochs are validated does not
            # depend on that (only on --val_freq and the final epoch), so a stopped and resumed run keeps the
            # same best.pth as an uninterrupted one.
            stop = epoch + 1 < opt.n_epoch and self.out_of_time(ahead=time.perf_counter() - start)
            if (epoch + 1) % opt.val_freq == 0 or epoch + 1 == opt.n_epoch:
                metrics = self.validate()
                line += f" val {format_metrics(metrics)}"
                if improves(metrics, self.best, opt.best_rule):  # default: by SRCC + PLCC, not SRCC *or* PLCC
                    self.best = {**metrics, "epoch": epoch + 1}
                    self.save("best.pth", epoch, loss, metrics)
                    line += " (best)"
            self.save("last.pth", epoch, loss, metrics)
            if self.writer is not None:
                self.writer.add_scalar("train/loss", loss, epoch + 1)
                self.writer.add_scalar("train/lr", lr, epoch + 1)
                for key, value in (metrics or {}).items():
                    self.writer.add_scalar(f"val/{key}", value, epoch + 1)
                self.writer.flush()
            self.log.info(f"{line} time={time.perf_counter() - start:.1f}s")
            if stop:
                self.log.info(f"time limit of {opt.time_limit:.0f}s reached after epoch {epoch + 1}; saved "
                              f"{self.run_dir / 'last.pth'} (--resume continues from it)")
                break
        if self.best["main"] > -math.inf:
            self.log.info(f"best: epoch {self.best.get('epoch')} {format_metrics(self.best)} -> {self.run_dir / 'best.pth'}")
        self.close()
        return self.best
