"""Atomic writes: a crash mid-write never leaves a truncated checkpoint or results file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` for a temporary file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    atomic_write(path, write)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_options(values: dict, folder: str | os.PathLike, stem: str = "opt") -> None:
    """Write ``<stem>.json`` (machine-readable, a valid ``--config`` file) and ``<stem>.txt`` (readable)."""
    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(values.items())}
    atomic_write_text(Path(folder) / f"{stem}.json", json.dumps(values, indent=2) + "\n")
    width = max(map(len, values))
    lines = [f"{k:<{width}} : {v}" for k, v in values.items()]
    atomic_write_text(Path(folder) / f"{stem}.txt", "\n".join(lines) + "\n")
