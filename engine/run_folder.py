"""A training run's folder (``<checkpoints_dir>/<name>/``): one writer at a time, its log and TensorBoard scalars,
its options, and its checkpoints (written atomically, never with non-finite weights), read back for ``--resume``."""
from __future__ import annotations

import json
import logging
import math
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from ahiq.models.ahiq import AHIQ
from ahiq.models.checkpoint import read_record, save_checkpoint
from ahiq.utils.errors import UserError, arg, flag, plain
from ahiq.utils.inputs import may_replace
from ahiq.utils.io import atomic_write_text, check_writable, load_torch_file, lock_folder, remove_stale_temps

# What a run leaves in its folder (``--overwrite`` removes them); the first three mean the folder holds a run.
RUN_FILES = ("last.pth", "best.pth", "opt.json", "opt.txt", "split.json", "train.log", "tb")
LAST_NEEDS = ("deform_net_model_state_dict", "regressor_model_state_dict", "optimizer_state_dict",
              "scheduler_state_dict", "epoch", "ahiq")


def rng_state() -> dict:
    """The Python, numpy and torch RNG states as tensors and plain values (loadable with weights_only)."""
    np_state = np.random.get_state(legacy=False)
    np_state["state"] = {"key": np_state["state"]["key"].tolist(), "pos": int(np_state["state"]["pos"])}
    state = {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # a dict (ours) or the legacy tuple of checkpoints written before
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunFolder:
    """The folder of one run, created and locked on rank 0 (``main=False``: a silent stand-in)."""

    def __init__(self, path: Path, main: bool = True, resume: bool = False, overwrite: bool = False):
        self.path, self.main, self.writer = Path(path), main, None
        self.replacing: list[str] = []
        self.log = logging.getLogger(f"ahiq.train.{id(self)}")
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        self.created = next((d for d in reversed([self.path, *self.path.parents]) if not d.exists()), None)
        self.lock = None
        if not main:
            return
        check_writable(self.path, "run folder ", folder=True)  # before any data or model work
        self.lock = lock_folder(self.path)
        held = [n for n in RUN_FILES[:3] if (self.path / n).exists()]
        if held and not resume and not overwrite:
            self.close()
            raise UserError(f"{self.path}: holds a run ({', '.join(held)}); add {flag('resume')} to continue it, give "
                            f"a new name ({arg('name')}NEW), or add {flag('overwrite')} to replace it")
        if overwrite and not resume:
            self.replacing = [n for n in RUN_FILES if (self.path / n).exists()]
        may_replace(self.path / n for n in RUN_FILES)  # read to be continued (resume): this run writes them anew
        stale = remove_stale_temps(self.path)
        self._open_log()
        if stale:
            self.log.info(f"removed {len(stale)} temporary file(s) of interrupted writes: "
                          f"{', '.join(p.name for p in stale)}")

    def _open_log(self) -> None:
        to_file = logging.FileHandler(self.path / "train.log")
        to_file.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        to_screen = logging.StreamHandler(sys.stdout)
        to_screen.setFormatter(logging.Formatter("%(message)s"))
        self.log.addHandler(to_file)
        self.log.addHandler(to_screen)

    def _close_log(self) -> None:
        for handler in list(self.log.handlers):
            handler.close()
            self.log.removeHandler(handler)

    def start_over(self) -> None:
        """With ``overwrite``: remove the previous run's files (:data:`RUN_FILES`), said in the new log."""
        if not self.main or not self.replacing:
            return
        self._close_log()
        for name in self.replacing:
            target = self.path / name
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink(missing_ok=True)
        self._open_log()
        self.log.info(plain(f"{self.path}: replaced the run that was here ({flag('overwrite')}): removed "
                            f"{', '.join(self.replacing)}"))
        self.replacing = []

    def start_tensorboard(self) -> None:
        if self.main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.path / "tb"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def save_options(self, config: dict) -> None:
        """``opt.json`` (the run's configs, versioned; a valid ``--config`` file) and ``opt.txt`` (readable)."""
        if not self.main:
            return
        atomic_write_text(self.path / "opt.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
        rows = []
        for key, value in sorted(config.items()):
            section = isinstance(value, dict) and key in ("run", "model", "data")
            rows += [(f"{key}.{k}", v) for k, v in value.items()] if section else [(key, value)]
        width = max(len(k) for k, _ in rows)
        atomic_write_text(self.path / "opt.txt", "".join(f"{k:<{width}} : {v}\n" for k, v in rows))

    def check_finite(self, model: AHIQ, epoch: int) -> None:
        """Stop as diverged when a trained weight is NaN or Inf."""
        bad = next((f"{part}.{n}" for part in ("deform_net", "regressor")
                    for n, p in getattr(model, part).named_parameters() if not torch.isfinite(p).all()), None)
        if bad is not None:
            raise UserError(f"training diverged: {bad} holds NaN or Inf after epoch {epoch + 1}; nothing saved "
                            f"({self.path} keeps the last good checkpoints); lower --learning_rate or set --grad_clip")

    def save(self, filename: str, model: AHIQ, meta: dict, **state) -> None:
        """Write a checkpoint atomically (never with weights that are not finite)."""
        self.check_finite(model, meta.get("epoch", 0))
        if self.main:
            save_checkpoint(self.path / filename, model, meta, **state)

    def read_last(self) -> tuple[Path, dict] | None:
        """``(path, contents)`` of ``last.pth`` for ``--resume``; None when there is none yet."""
        path = self.path / "last.pth"
        if not path.is_file():
            self.log.info(f"resume: {path} not found; starting from epoch 1")
            return None
        ckpt = load_torch_file(path, "checkpoint")
        missing = [k for k in LAST_NEEDS if k not in ckpt] if isinstance(ckpt, dict) else list(LAST_NEEDS)
        if missing:
            raise UserError(f"{path}: not a last.pth written by train.py (lacks {', '.join(missing)}); move it "
                            "away to start over, or drop --resume")
        read_record(ckpt["ahiq"], path)  # its metadata typed and in range, or one line
        return path, ckpt

    def close(self) -> None:
        """Close the log file, TensorBoard and the lock."""
        self._close_log()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.lock is not None:
            self.lock.close()
            self.lock = None

    def discard(self) -> None:
        """After a failed set-up: close, and remove the folders this run created."""
        self.close()
        if self.main and self.created is not None:
            shutil.rmtree(self.created, ignore_errors=True)


def best_text(best: dict) -> str:
    return "none yet (no validation)" if best.get("main", -math.inf) == -math.inf else f"main={best['main']:.4f}"
