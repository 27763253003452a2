"""The files a run reads, registered by the functions that read them (:func:`reading`), so that no write of the run
lands on one (``utils.io`` asks :func:`read_by_this_run`). One register per process: screening decodes in threads."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator


class InputRegister:
    """Resolved paths read by this run (``{path: as named}``), and those it may replace (its run folder's files)."""

    def __init__(self) -> None:
        self.read: dict[Path, str] = {}
        self.replaceable: set[Path] = set()


_open: list[InputRegister] = []  # the registers of the runs in progress in this process, innermost last


def _real(path: str | os.PathLike) -> Path | None:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError, ValueError):  # a looping link, a NUL byte: nothing a write could land on
        return None


@contextmanager
def input_register() -> Iterator[InputRegister]:
    """Record what is read until the block ends (a script's run)."""
    register = InputRegister()
    _open.append(register)
    try:
        yield register
    finally:
        _open.remove(register)


def reading(path: str | os.PathLike) -> None:
    """Record that the running script reads ``path`` (nothing outside a register)."""
    if _open and str(path) != "-" and (real := _real(path)) is not None:
        _open[-1].read.setdefault(real, str(path))


def may_replace(paths: Iterable[str | os.PathLike]) -> None:
    """Let this run replace ``paths`` even after reading them (its own run folder's files)."""
    if _open:
        _open[-1].replaceable.update(p for p in map(_real, paths) if p is not None)


def read_by_this_run(path: str | os.PathLike) -> str | None:
    """How the running script named ``path`` when it read it (None: not read, or this run may replace it)."""
    real = _real(path) if _open else None
    return None if real is None or real in _open[-1].replaceable else _open[-1].read.get(real)


def read_so_far() -> list[str]:
    """Every file read so far by the running script that it may not replace (for early output checks)."""
    return [named for real, named in _open[-1].read.items() if real not in _open[-1].replaceable] if _open else []
