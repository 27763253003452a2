"""Training: the epoch loop over :class:`TrainConfig`, with validation, checkpoints, resume and DDP."""
from __future__ import annotations

import functools
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from ahiq.data.crops import parse_crops
from ahiq.data.datasets import write_generated
from ahiq.data.records import Pair
from ahiq.data.sampling import CropPairs, EpochSampler, ScoreNorm
from ahiq.data.images import read_image
from ahiq.data.screening import describe, screen_pairs
from ahiq.data.splits import prepare_splits
from ahiq.engine.config import BEST_RULES, TrainConfig, run_defining
from ahiq.engine.device import RunContext, describe_precision, seed_everything, usable_workers
from ahiq.engine.run_folder import RunFolder, best_text, rng_state, set_rng_state
from ahiq.engine.scoring import quiet_worker
from ahiq.engine.session import predict
from ahiq.engine.training import build_optimizer, build_scheduler, step_loss
from ahiq.models.ahiq import build_ahiq
from ahiq.models.checkpoint import (CheckpointRecord, check_heads_fit, choose_backbones, load_heads,
                                    open_checkpoint)
from ahiq.models.config import IMPLEMENTATION_ONLY, ModelConfig
from ahiq.utils.errors import UserError, arg, flag
from ahiq.utils.io import check_outputs
from ahiq.utils.metrics import evaluate, format_metrics

def improves(metrics: dict[str, float], best: dict[str, float], rule: str = "sum") -> bool:
    """Whether validation ``metrics`` beat ``best``: ``sum``: SRCC + PLCC rose; ``either``: SRCC or PLCC rose."""
    if rule == "sum":
        last = best.get("main", -math.inf)
        last = -math.inf if math.isnan(last) else last
        if math.isnan(metrics["main"]):  # a validation part too small to correlate (n<2): only a first best
            return last == -math.inf and "epoch" not in best
        return metrics["main"] > last
    if rule == "either":
        return metrics["SRCC"] > best.get("SRCC", 0.0) or metrics["PLCC"] > best.get("PLCC", 0.0)
    raise ValueError(f"rule={rule}: use one of {', '.join(BEST_RULES)}")


def adopt_architecture(asked: ModelConfig, given: tuple[str, ...], record: CheckpointRecord, where: str) -> ModelConfig:
    """The architecture of a run from a checkpoint: the recorded one; a field the user set otherwise stops."""
    if record.model_config is None:
        return asked
    mine, theirs = asked.to_dict(), record.model_config.to_dict()
    shown = lambda v: ",".join(map(str, v)) if isinstance(v, list) else v  # noqa: E731
    for key in sorted(set(given) - set(IMPLEMENTATION_ONLY)):
        if mine[key] != theirs[key]:
            raise UserError(f"{arg('checkpoint')}{where} was trained with {key} {shown(theirs[key])}, the options say "
                            f"{shown(mine[key])}; drop the option (the checkpoint's architecture is used) or give "
                            "another checkpoint")
    return ModelConfig.from_dict({**theirs, **{k: mine[k] for k in IMPLEMENTATION_ONLY}})


def same_run(cfg: TrainConfig, path: Path, ckpt: dict, options: Path) -> None:
    """At resume: a :class:`UserError` when a run-defining option differs from what ``last.pth`` recorded."""
    trained = (ckpt.get("ahiq") or {}).get("train") if isinstance(ckpt.get("ahiq"), dict) else None
    if not isinstance(trained, dict):
        return  # written before checkpoints recorded their config: nothing to compare
    now, trained = (json.loads(json.dumps(c, default=str)) for c in (cfg.to_dict(), trained))  # tuples as lists
    for key in run_defining():
        for section in ("model", "data", None):
            mine = now.get(section, {}) if section else now
            theirs = trained.get(section) if section else trained
            if key in mine and isinstance(theirs, dict) and key in theirs and key not in IMPLEMENTATION_ONLY:
                if mine[key] != theirs[key]:
                    where = f"{section}.{key}" if section else key
                    raise UserError(f"{path}: was trained with {where} {theirs[key]!r}, the run's options ({options} and "
                                    f"those given) say {mine[key]!r}; restore them to continue the run as it was, "
                                    f"or add {flag('allow_changes')}")
                break


class Trainer:
    """Trains ``deform_net`` and ``regressor`` of an :class:`AHIQ` model; see the module docstring."""

    def __init__(self, cfg: TrainConfig, ctx: RunContext):
        if cfg.time_limit and ctx.world_size > 1:
            raise UserError("--time_limit is for single-process runs (ranks would stop at different steps)")
        self.ctx = ctx
        self.folder = RunFolder(Path(cfg.checkpoints_dir) / cfg.name, ctx.main, cfg.resume, cfg.overwrite)
        self.log = self.folder.log
        try:
            contents, record = self._open_inputs(cfg)
            self._prepare_data()
            self._build_model(contents, record)
            if self.resume_from is not None:
                self._resume(*self.resume_from)
            self._build_loader()
            self.folder.start_tensorboard()
            self.folder.save_options(self.cfg.to_dict())  # a valid --config file
        except BaseException:  # a run whose set-up fails leaves no (nearly empty) run folder behind
            self.folder.discard()
            raise

    def _open_inputs(self, cfg: TrainConfig) -> tuple[tuple[dict, dict, dict] | None, CheckpointRecord]:
        """Read (and refuse) the named files and ``last.pth`` before any data work; guard the outputs."""
        folder = self.folder
        contents, record = open_checkpoint(cfg.checkpoint)
        model_cfg = adopt_architecture(cfg.model, cfg.model_given, record, str(cfg.checkpoint))
        if contents is not None:  # on the meta device: a checkpoint that does not fit stops before any work
            check_heads_fit(model_cfg, contents[0], contents[1], cfg.checkpoint)
        self.cfg = cfg = replace(cfg, model=model_cfg, crop_size=record.crop(cfg.crop_size))
        outputs = {f"run folder {folder.path}: ": folder.path / n  # split.json too: --overwrite removes it
                   for n in ("last.pth", "best.pth", "opt.json", "split.json")}
        continued = {(folder.path / n).resolve() for n in ("last.pth", "split.json")} if cfg.resume else set()
        check_outputs(outputs, [p for p in (cfg.checkpoint, cfg.vit_weights, cfg.cnn_weights, cfg.data.split_file)
                                if p and Path(p).resolve() not in continued])
        folder.start_over()  # --overwrite: the previous run's files go, now that none is an input
        self.resume_from = folder.read_last() if cfg.resume else None  # every rank reads it
        if self.resume_from is not None and not cfg.allow_changes:
            same_run(cfg, *self.resume_from, folder.path / "opt.json")
        return contents, record

    def _prepare_data(self) -> None:
        """The train and validation pairs, screened (every image decoded once), and the score normalisation."""
        cfg, ctx = self.cfg, self.ctx
        seed_everything(cfg.run.seed)
        ctx.main_first(lambda: write_generated(cfg.data), "data written")  # the others read a generated set whole
        self.parts, self.split_info = prepare_splits(cfg.data, self.folder.path if ctx.main else None)
        if not self.parts["train"] or not self.parts["val"]:
            raise UserError(f"need training and validation pairs; got {describe(self.parts['train'])} and "
                            f"{describe(self.parts['val'])} (check --split_ratio / --val_list)")
        warned: set[str] = set()
        for name in ("train", "val"):  # bad pairs stop training unless --skip_bad
            self.parts[name] = screen_pairs(self.parts[name], cfg.crop_size, cfg.skip_bad, part=name,
                                            max_pixels=cfg.run.max_pixels, report=self.log.info, warned=warned)
        if cfg.val_drop_last and len(self.parts["val"]) < cfg.batch_size:
            raise UserError(f"--val_drop_last with --batch_size {cfg.batch_size} leaves no validation pair of "
                            f"{len(self.parts['val'])}; lower --batch_size or drop --val_drop_last")
        train_scores = [p.score for p in self.parts["train"]]
        self.norm = ScoreNorm.fit(train_scores, "none" if cfg.score_norm == "none" else "minmax")
        self.label_range = [float(min(train_scores)), float(max(train_scores))]

    def _build_model(self, contents: tuple[dict, dict, dict] | None, record: CheckpointRecord) -> None:
        """The model, its optimiser, sampler and schedule, and the state a run starts from (replaced by :meth:`_resume`)."""
        cfg, ctx = self.cfg, self.ctx
        sources = choose_backbones(cfg.model, record.backbones, vit_weights=cfg.vit_weights, cnn_weights=cfg.cnn_weights,
                                   pretrained_backbones=cfg.pretrained_backbones, default_seed=cfg.run.seed,
                                   where=str(cfg.checkpoint))
        self.model = build_ahiq(cfg.model, sources=sources)
        if contents is not None:
            load_heads(self.model, contents[0], contents[1], cfg.checkpoint)
            self.log.info(f"initialised fusion and head from {cfg.checkpoint}")
        self.model.to(ctx.device)
        self.optimizer = build_optimizer(self.model, cfg.learning_rate, cfg.weight_decay, cfg.feature_lr_scale)
        self.sampler = EpochSampler(len(self.parts["train"]), cfg.run.seed, ctx.rank, ctx.world_size)
        steps = math.ceil(len(self.sampler) / cfg.batch_size)
        self.steps_per_epoch = min(steps, cfg.max_steps) if cfg.max_steps else steps
        self.scheduler = build_scheduler(self.optimizer, cfg.T_max, cfg.eta_min, cfg.n_epoch * self.steps_per_epoch)
        self.start_epoch, self.best = 0, {"main": -math.inf}
        self.start_metrics: dict | None = None  # validation before any step (--validate_first)
        self.val_notes: dict[str, str] = {}  # the last validation's notes (utils.metrics.Evaluation.notes)
        self.position: dict | None = None  # inside an epoch: {"epoch", "step", "loss_sum", "count"}

    def _build_loader(self) -> None:
        """The network the loop runs (DDP- and compile-wrapped as asked) and the training loader."""
        cfg, ctx = self.cfg, self.ctx
        self.net = self.model
        if ctx.world_size > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                broadcast_buffers=False)
        if cfg.run.compile:
            self.net = torch.compile(self.net)
        self.train_set = CropPairs(self.parts["train"], self.norm([p.score for p in self.parts["train"]]),
                                   cfg.crop_size, cfg.flip, cfg.run.seed, cfg.train_crop_rule, cfg.run.max_pixels)
        workers = usable_workers(cfg.run.num_workers)
        self.loader = DataLoader(self.train_set, batch_size=cfg.batch_size, sampler=self.sampler, num_workers=workers,
                                 collate_fn=CropPairs.collate, pin_memory=ctx.device.type == "cuda",
                                 persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
                                 worker_init_fn=quiet_worker if workers else None)

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
                set_rng_state(rng)
        except (KeyError, ValueError, TypeError, AttributeError, RuntimeError) as err:
            raise UserError(f"{path}: its training state does not load ({type(err).__name__}: {err}); move it "
                            "away to start over, or drop --resume") from None
        self.position = ckpt.get("position")
        if self.position is not None:
            self.start_epoch = int(self.position["epoch"])
            self.log.info(f"resumed from {path}: inside epoch {self.start_epoch + 1}, after step "
                          f"{self.position['step']} of {self.steps_per_epoch}; best {best_text(self.best)}")
        else:
            self.log.info(f"resumed from {path}: epoch {self.start_epoch} done, best {best_text(self.best)}")

    def close(self) -> None:
        self.folder.close()

    def out_of_time(self, ahead: float = 0.0) -> bool:
        """Whether ``--time_limit`` is (or, ``ahead`` seconds from now, will be) used up."""
        return bool(self.cfg.time_limit) and time.perf_counter() + ahead - self.started > self.cfg.time_limit

    def train_epoch(self, epoch: int) -> float:
        """Train one epoch (or its rest); the mean loss; :attr:`position` set where ``--time_limit`` stopped it."""
        cfg, device = self.cfg, self.ctx.device
        self.net.train()
        at = self.position if self.position is not None and int(self.position["epoch"]) == epoch else None
        at = at or {"step": 0, "loss_sum": torch.zeros(()), "count": 0}  # where this epoch (re)starts
        first, loss_sum, count = int(at["step"]), at["loss_sum"].to(device), int(at["count"])
        self.position = None
        # The order of an epoch is a function of (seed, epoch): a resumed epoch skips the batches already trained.
        self.sampler.set_epoch(epoch, skip=first * cfg.batch_size)
        steps = self.steps_per_epoch
        bar = tqdm(total=steps, initial=first, desc=f"epoch {epoch + 1}/{cfg.n_epoch}", unit="step",
                   disable=not (self.ctx.main and cfg.progress), leave=False, file=sys.stdout)
        for step, (dist_img, ref_img, target, _) in enumerate(self.loader, start=first):
            if step >= steps:
                break
            if self.out_of_time():
                self.position = {"epoch": epoch, "step": step, "loss_sum": loss_sum.detach().cpu(), "count": count}
                break
            loss = step_loss(self.model, self.optimizer, dist_img.to(device, non_blocking=True),
                             ref_img.to(device, non_blocking=True), target.to(device, non_blocking=True),
                             cfg.run.precision, net=self.net, grad_clip=cfg.grad_clip, strict_fp32=cfg.strict_fp32)
            self.scheduler.step()
            loss_sum += loss * len(target)
            count += len(target)
            if step % 10 == 0 or step == steps - 1:  # the only host syncs of the loop
                value = loss.item()
                if not math.isfinite(value):
                    raise UserError(f"training diverged: loss is {value} at epoch {epoch + 1} step {step + 1}; "
                                    "nothing saved; lower --learning_rate or set --grad_clip")
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
            bar.update(1)
        bar.close()
        if self.ctx.world_size > 1:
            total = torch.stack([loss_sum, torch.tensor(float(count), device=device)])
            dist.all_reduce(total)
            loss_sum, count = total[0], int(total[1].item())
        return float(loss_sum.item() / max(count, 1))

    def validation_pairs(self) -> list[Pair]:
        """The pairs validation scores: all, or with ``val_drop_last`` all but the last partial batch."""
        pairs = self.parts["val"]
        return pairs[:len(pairs) - len(pairs) % self.cfg.batch_size] if self.cfg.val_drop_last else pairs

    def validation_predictions(self) -> list[float]:
        """Predictions for :meth:`validation_pairs`, in order, each pair scored once across ranks."""
        cfg = self.cfg
        self.model.eval()
        pairs = self.validation_pairs()
        scores = predict(self.model, pairs, self.ctx, crops=cfg.val_crops, crop_size=cfg.crop_size, seed=cfg.run.seed,
                         batch_size=cfg.batch_size * parse_crops(cfg.val_crops)[1], precision=cfg.run.precision,
                         num_workers=cfg.run.num_workers, progress=cfg.progress,
                         read=functools.partial(read_image, max_pixels=cfg.run.max_pixels))
        return [scores[i] for i in range(len(pairs))]

    def validate(self) -> dict[str, float]:
        """Metrics against the labels, normalised as in training (``per_split``: within the validation pairs)."""
        predictions = self.validation_predictions()
        labels = [p.score for p in self.validation_pairs()]
        # per_split fits on the whole validation file, as the release did before its loader dropped a batch
        norm = ScoreNorm.fit([p.score for p in self.parts["val"]]) if self.cfg.score_norm == "per_split" else self.norm
        found = evaluate(predictions, norm(labels))
        self.val_notes = found.notes()  # why a figure is missing (too few pairs), and the fitted mapping's form
        return found.metrics

    def save(self, filename: str, epoch: int, loss: float, metrics: dict | None) -> None:
        """Write ``filename`` in the run folder with the training state; ``epoch``: the last finished epoch's index."""
        rng = {k: v for part in self.ctx.gather({self.ctx.rank: rng_state()}) for k, v in part.items()}
        meta = {"score_norm": self.norm.to_dict(), "label_range": self.label_range, "split": self.split_info,
                "epoch": epoch, "train": self.cfg.to_dict()}
        self.folder.save(filename, self.model, meta, epoch=epoch, loss=loss,
                         optimizer_state_dict=self.optimizer.state_dict(),
                         scheduler_state_dict=self.scheduler.state_dict(), best=self.best, metrics=metrics, rng=rng,
                         start_metrics=self.start_metrics, position=self.position)

    def end_epoch(self, epoch: int, loss: float, start: float) -> bool:
        """Validate when due, save ``last.pth`` (and ``best.pth``), log; whether another epoch would overrun the limit."""
        cfg = self.cfg
        lr = self.scheduler.get_last_lr()[0]
        metrics = None
        line = f"epoch {epoch + 1}/{cfg.n_epoch} loss={loss:.5f} lr={lr:.3e}"
        stop = epoch + 1 < cfg.n_epoch and self.out_of_time(ahead=time.perf_counter() - start)
        if (epoch + 1) % cfg.val_freq == 0 or epoch + 1 == cfg.n_epoch:
            metrics = self.validate()
            line += f" val {format_metrics(metrics, self.val_notes)}"
            if improves(metrics, self.best, cfg.best_rule):
                self.best = {**metrics, "epoch": epoch + 1}
                self.save("best.pth", epoch, loss, metrics)
                line += " (best)"
        self.save("last.pth", epoch, loss, metrics)
        self.folder.scalars(epoch + 1, {"train/loss": loss, "train/lr": lr,
                                        **{f"val/{k}": v for k, v in (metrics or {}).items()}})
        self.log.info(f"{line} time={time.perf_counter() - start:.1f}s")
        return stop

    def run(self) -> dict[str, float]:
        cfg, ctx = self.cfg, self.ctx
        if self.start_epoch >= cfg.n_epoch and self.position is None:
            self.log.info(f"{self.folder.path}: the run has finished its {cfg.n_epoch} epoch(s) (best "
                          f"{best_text(self.best)}); give a larger --n_epoch with --resume to train further")
            return self.best
        self.log.info(f"run: world_size={ctx.world_size} device={ctx.device} "
                      f"precision={describe_precision(cfg.run.precision, ctx.device)} name={cfg.name} "
                      f"dataset={cfg.data.dataset} train={describe(self.parts['train'])} "
                      f"val={describe(self.parts['val'])} crop={cfg.crop_size} batch={cfg.batch_size} "
                      f"epochs={self.start_epoch + 1}..{cfg.n_epoch}")
        self.started = time.perf_counter()
        if cfg.validate_first and self.start_epoch == 0 and self.position is None:
            self.start_metrics = self.validate()
            self.log.info(f"epoch 0/{cfg.n_epoch} (before training) val "
                          f"{format_metrics(self.start_metrics, self.val_notes)}")
        for epoch in range(self.start_epoch, cfg.n_epoch):
            start = time.perf_counter()
            loss = self.train_epoch(epoch)
            self.folder.check_finite(self.model, epoch)
            if self.position is not None:  # --time_limit ran out inside the epoch: keep the exact position
                self.save("last.pth", epoch - 1, loss, None)
                self.log.info(f"time limit of {cfg.time_limit:.0f}s reached inside epoch {epoch + 1}, after step "
                              f"{self.position['step']} of {self.steps_per_epoch}; saved that position in "
                              f"{self.folder.path / 'last.pth'} (--resume continues from it exactly)")
                break
            if self.end_epoch(epoch, loss, start):
                self.log.info(f"time limit of {cfg.time_limit:.0f}s reached after epoch {epoch + 1}; saved "
                              f"{self.folder.path / 'last.pth'} (--resume continues from it)")
                break
        if "epoch" in self.best:
            self.log.info(f"best: epoch {self.best.get('epoch')} {format_metrics(self.best)} -> "
                          f"{self.folder.path / 'best.pth'}")
        self.close()
        return self.best
