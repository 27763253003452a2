"""User-facing errors: one line saying what is wrong, where, and what to do.

Library code (``models/``, ``data/``, the running floor) speaks of its Python arguments; scripts speak of
flags. A message names an argument as ``{arg:NAME}``: :class:`UserError` renders it as ``NAME=`` when read
from Python and :func:`cli_main` as ``--NAME `` on the command line, so one message serves both.
"""
from __future__ import annotations

import functools
import os
import re
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

_ARG = re.compile(r"\{arg:([A-Za-z_][A-Za-z0-9_]*)\}")
_FLAG = re.compile(r"\{flag:([A-Za-z_][A-Za-z0-9_]*)\}")


def arg(name: str) -> str:
    """The marker for argument ``name`` followed by its value inside a :class:`UserError` message:
    ``f"{arg('crop_size')}100"`` reads ``crop_size=100`` from Python, ``--crop_size 100`` on the command line."""
    return "{arg:" + name + "}"


def flag(name: str) -> str:
    """The marker for a switch: ``name=True`` from Python, ``--name`` on the command line."""
    return "{flag:" + name + "}"


class UserError(Exception):
    """A mistake in the user's input or setup; printed as one line, never with a traceback.

    ``str(err)`` names arguments the Python way (``vit_weights=``); :meth:`for_cli` the command-line way
    (``--vit_weights``).
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.template = message

    def __str__(self) -> str:
        return _FLAG.sub(lambda m: f"{m.group(1)}=True", _ARG.sub(lambda m: f"{m.group(1)}=", self.template))

    def for_cli(self) -> str:
        return _FLAG.sub(lambda m: f"--{m.group(1)}", _ARG.sub(lambda m: f"--{m.group(1)} ", self.template))


class Stopped(UserError):
    """This process stops because another rank of the run failed (that rank says why, in one line)."""


def cli_main(fn: F) -> F:
    """Wrap a script's ``main`` so that a :class:`UserError` prints one line and exits with status 2 (a rank
    :class:`Stopped` by another's failure exits quietly) and Ctrl-C prints one line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Stopped:
            sys.exit(2)
        except UserError as err:
            # Under torchrun every rank meets the same bad input: rank 0 says it, unless the error is this rank's own.
            if os.environ.get("RANK", "0") == "0" or getattr(err, "rank_specific", False):
                print(f"error: {err.for_cli()}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
