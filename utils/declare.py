"""Options declared once, on the config field they set (help, range, choices and scripts in its metadata), from which
``ahiq.options`` derives the parsers, the range checks and the README's option tables."""
from __future__ import annotations

import json
import math
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, Callable, Iterator, get_type_hints

from ahiq.utils.errors import UserError, arg

SCRIPTS = ("train", "test", "score")


def str2bool(text: str) -> bool:
    """``true/false/yes/no/1/0/on/off`` -> bool (argparse's ``type=bool`` would take any text as True)."""
    value = str(text).strip().lower()
    if value in ("true", "yes", "1", "on"):
        return True
    if value in ("false", "no", "0", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def int_list(text: str) -> tuple[int, ...]:
    """``'1,2,3'`` or ``'1-5'`` -> tuple of ints."""
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(v) for v in text.split("-"))
            return tuple(range(lo, hi + 1))
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"expected numbers like 1,2,3 or 1-5, got {text!r}") from None


def json_dict(text: str) -> dict:
    """``'{"depth": 2}'`` -> dict (keyword arguments given on the command line)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ValueError(f'expected a JSON object like {{"depth": 2}}, got {text!r}')
    return value


def number(x: float) -> str:
    """A range's end as people write it: ``2^32-1``, ``10^6``, ``0.001``."""
    if x == 2**32 - 1:
        return "2^32-1"
    if isinstance(x, int) and x >= 10**6 and str(x).rstrip("0") == "1":
        return f"10^{len(str(x)) - 1}"
    return f"{x:g}"


@dataclass(frozen=True)
class Flag:
    """What the command line adds to a config field: ``help`` (texts by script, ``"*"`` for the others), a finite range
    ``low..high`` (both included), ``parse`` (text -> value), ``switch`` (no value), ``defaults`` by script, ``shown``
    and ``valid`` (what ``--help`` and the README say where the values alone do not tell)."""

    help: str | dict[str, str]
    group: str = "run"
    scripts: tuple[str, ...] = SCRIPTS
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    parse: Callable[[str], Any] | None = None
    switch: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)
    shown: str | None = None
    required: tuple[str, ...] = ()
    valid: str | None = None

    def text(self, script: str) -> str:
        return self.help if isinstance(self.help, str) else self.help.get(script, self.help.get("*", ""))

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is outside this option's range or choices (None: it is inside)."""
        if value is None:
            return None
        if self.choices is not None and value not in self.choices:
            return f"choose one of {', '.join(map(str, self.choices))}"
        if self.low is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and self.low <= value <= self.high)):
            return f"must be a number from {number(self.low)} to {number(self.high)}"
        return None


def option(default: Any = None, help: str | dict[str, str] = "", **flag: Any) -> Any:
    """A config field that is also a command-line option (``flag``: see :class:`Flag`); mutable defaults copied."""
    meta = {"flag": Flag(help=help, **flag)}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Declared:
    """One declared option: its name, the field's type and default, and its :class:`Flag`."""

    name: str
    kind: Any
    default: Any
    flag: Flag

    @property
    def true_false(self) -> bool:
        """Whether the option takes ``true``/``false`` (alone: true), as a bool field without a parser or switch does."""
        return "bool" in str(self.kind) and self.flag.parse is None and not self.flag.switch

    def default_for(self, script: str) -> Any:
        return self.flag.defaults.get(script, self.default)

    def convert(self, text: str) -> Any:
        """The value of the option's text, as the command line gives it."""
        if self.flag.parse is not None:
            return self.flag.parse(text)
        kind = str(self.kind)
        if "bool" in kind:
            return str2bool(text)
        for word, convert, what in (("int", int, "an integer"), ("float", float, "a number")):
            if word in kind:
                try:
                    return convert(text)
                except ValueError:
                    raise ValueError(f"expected {what}, got {text!r}") from None
        return text


def declared(cls: type) -> Iterator[Declared]:
    """The options declared on ``cls``'s fields, and on the fields of configs it holds, in field order."""
    hints = get_type_hints(cls)
    for f in fields(cls):
        kind = hints[f.name]
        if is_dataclass(kind):
            yield from declared(kind)
        elif "flag" in f.metadata:
            default = f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default
            yield Declared(f.name, kind, default, f.metadata["flag"])


def check_choices(config: Any) -> None:
    """Every declared field of ``config`` that has choices holds one of them, else a one-line :class:`UserError`
    (a config built in Python is held to the choices its options declare)."""
    for f in fields(config):
        flag, value = f.metadata.get("flag"), getattr(config, f.name)
        if flag is not None and flag.choices is not None and value not in flag.choices:
            raise UserError(f"{arg(f.name)}{value}: choose one of {', '.join(map(str, flag.choices))}")
