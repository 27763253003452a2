"""User-facing errors, one line each: a message names an argument as ``{arg:NAME}``, rendered ``NAME=`` from Python
and ``--NAME `` on the command line. Notes and warnings go to the ``ahiq`` logger (:func:`note`), never ``print``."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import signal
import sys
import threading
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

_MARK = re.compile(r"\{(arg|flag|name):([A-Za-z_][A-Za-z0-9_]*)\}")
_FORMS = {True: {"arg": "--{} ", "flag": "--{}", "name": "--{}"}, False: {"arg": "{}=", "flag": "{}=True", "name": "{}"}}
_in_script = False  # inside a script's main (cli_main): printed lines name arguments as flags


def render(text: str, cli: bool) -> str:
    """``text`` with its markers as flags (``cli``) or as Python arguments."""
    return _MARK.sub(lambda m: _FORMS[cli][m.group(1)].format(m.group(2)), text)


def plain(text: str) -> str:
    """``text`` with its markers named as the running entry point names arguments (flags inside a script)."""
    return render(text, _in_script)


class _Lines(logging.StreamHandler):
    """Each record as its bare message on the stderr of the moment (a test's capture, a script's)."""

    stream = property(lambda self: sys.stderr, lambda self, value: None)  # never the stderr of when it was made


LOG = logging.getLogger("ahiq")
LOG.addHandler(_Lines())
LOG.setLevel(logging.INFO)
LOG.propagate = False  # the lines are shown once, by the handler above (set True to reach the application's logging)


def note(text: str, level: int = logging.WARNING) -> None:
    """A note or warning on the ``ahiq`` logger, on rank 0 only (under ``torchrun`` every rank meets the same data)."""
    if os.environ.get("RANK", "0") == "0":
        LOG.log(level, plain(text))


def arg(name: str) -> str:
    """The marker of argument ``name`` before its value: ``crop_size=100`` from Python, ``--crop_size 100`` as a flag."""
    return "{arg:" + name + "}"


def named(name: str) -> str:
    """The marker for an argument named without a value: ``name`` from Python, ``--name`` on the command line."""
    return "{name:" + name + "}"


def flag(name: str) -> str:
    """The marker for a switch: ``name=True`` from Python, ``--name`` on the command line."""
    return "{flag:" + name + "}"


class UserError(Exception):
    """A mistake in the user's input or setup, one line; :meth:`for_cli` names arguments as flags."""

    def __init__(self, message: str):
        super().__init__(message)
        self.template = message

    def __str__(self) -> str:
        return render(self.template, cli=False)

    def for_cli(self) -> str:
        return render(self.template, cli=True)


class Stopped(UserError):
    """This process stops because another rank of the run failed (that rank says why, in one line)."""


@contextlib.contextmanager
def _quiet_teardown_after_ctrl_c():
    """After Ctrl-C, background threads that fail as the run tears down (multiprocessing's handle sharer, which
    DataLoader workers use, reports through ``sys.excepthook``) stay quiet, so the user reads one line."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    interrupted, hook = threading.Event(), sys.excepthook

    def on_ctrl_c(signum, frame):
        interrupted.set()
        raise KeyboardInterrupt

    sys.excepthook = lambda *exc: None if interrupted.is_set() else hook(*exc)
    signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if not interrupted.is_set():  # after Ctrl-C the workers are torn down as the process exits: stay quiet
            sys.excepthook = hook


def cli_main(fn: F) -> F:
    """Wrap a script's ``main``: a :class:`UserError` prints one line and exits 2 (:class:`Stopped`: quietly), Ctrl-C
    one line; the files the run reads are registered (:func:`utils.inputs.input_register`)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _in_script
        from ahiq.utils.inputs import input_register

        outer, _in_script = _in_script, True
        try:
            with input_register(), _quiet_teardown_after_ctrl_c():
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
        finally:
            _in_script = outer

    return wrapper  # type: ignore[return-value]
