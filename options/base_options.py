"""The command lines of the scripts, derived from the options declared once on the config fields
(``ahiq.utils.declare.option``); options flow one way: command line over ``--config`` file over a resumed run's
``opt.json`` -> checked values -> frozen configs (:func:`build`)."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import typing
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

from ahiq.engine.config import CONFIG_VERSION
from ahiq.models.config import ARCH, VIT_BY_PATCH, ModelConfig, check_crop_size
from ahiq.utils.declare import Declared, declared, option
from ahiq.utils.errors import UserError
from ahiq.utils.inputs import reading

NOT_GIVEN = object()
PRESETS = Path(__file__).resolve().parent / "presets"
TITLES = {ARCH: "architecture (a checkpoint records its own; these change it: ablations, tests)"}
# Keys of an options file that are not options: which script wrote it, and the format of a run's opt.json.
FILE_ONLY_KEYS = ("script", "config_version", "model_given", "config")
SECTIONS = ("run", "model", "data")  # sections of a run's opt.json (its configs), read as the options they hold


@dataclass(frozen=True)
class ScriptOptions:
    """Options of the scripts themselves, not of a config."""

    config: str | None = option(None, "options file: a preset by name (ntire2022, authors_release, ...: "
                                "options/presets/*.json) or path, or a run's opt.json; flags given on the command line "
                                "override it")
    patch_size: int = option(8, "ViT patch size; picks the default ViT tag for that patch size when --vit is not given",
                             group=ARCH, choices=(8, 16))
    check_data: bool = option(False, "only scan the data (labels parse, images exist and decode, sizes) and exit 1 on "
                              "problems", group="data", scripts=("train", "test"), switch=True)


class OneDefaultHelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """For the experiments' and examples' own parsers: ``(default: X)`` where the help does not say it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default is argparse.SUPPRESS or action.required or isinstance(
                action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction)):
            return text
        return f"{text} (default: {'none' if action.default is None else '%(default)s'})"


class OneLineErrors(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def shown_default(d: Declared, script: str) -> str | None:
    """The default as ``--help`` and the README say it (None: a switch, off, or nothing to say)."""
    if d.flag.shown is not None or d.flag.switch or script in d.flag.required:
        return d.flag.shown
    value = d.default_for(script)
    if value is None or isinstance(value, bool):
        return str(value).lower()  # none, true, false
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _typed(d: Declared, checked: bool = False):
    """``d``'s text -> value for argparse, whose message for a bad text then reads ``argument --x: why``; ``checked``:
    the value's range and choices too."""
    def convert(text: str):
        try:
            value = d.convert(text)
        except (ValueError, TypeError) as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        if checked and (problem := d.flag.problem(value)):
            raise argparse.ArgumentTypeError(f"{value}: {problem}")
        return value

    convert.__name__ = d.name
    return convert


class BaseOptions:
    """A script's options: the declarations of :class:`ScriptOptions` and of ``configs`` that name ``script``."""

    script = ""
    configs: tuple[type, ...] = ()
    description = "AHIQ"
    first_groups: tuple[str, ...] = ()  # the task's own groups, shown first by --help
    usage: str | None = None
    examples = ""  # shown at the end of --help (%(prog)s: the command as the user ran it)

    def __init__(self, prog: str | None = None):
        self.options: dict[str, Declared] = {}
        for cls in (ScriptOptions, *self.configs):
            for d in declared(cls):
                if self.script in d.flag.scripts:
                    if d.name in self.options and self.options[d.name].flag is not d.flag:
                        raise TypeError(f"--{d.name} is declared twice ({cls.__name__})")
                    self.options[d.name] = d
        self.parser = OneLineErrors(prog=prog, usage=self.usage, description=self.description, allow_abbrev=False,
                                    formatter_class=argparse.RawDescriptionHelpFormatter,
                                    epilog=f"examples:\n{self.examples}" if self.examples else None)
        order = (*self.first_groups, "weights", "run", ARCH)
        self.ordered = sorted(self.options.values(), key=lambda d: order.index(d.flag.group) if d.flag.group in order
                              else -1)  # as --help shows them: the task's own first, the architecture last
        groups = {}
        for d in self.ordered:
            title = TITLES.get(d.flag.group, d.flag.group)
            if title not in groups:
                groups[title] = self.parser.add_argument_group(title)
            add_option(groups[title], d, self.script)

    def defaults(self) -> dict:
        return {name: d.default_for(self.script) for name, d in self.options.items()}

    def parse(self, argv: list[str] | None = None) -> argparse.Namespace:
        """The checked options; ``self.given`` and ``self.from_file``: the options the user and the file set."""
        given = vars(self.parser.parse_args(argv))  # None: sys.argv[1:]
        self.given = set(given)
        from_file = load_options_file(given["config"], self) if given.get("config") else {}
        self.from_file = set(from_file)
        defaults = self.defaults()
        earlier = self.earlier({**defaults, **from_file, **given})
        opt = argparse.Namespace(**{**defaults, **earlier, **from_file, **given})
        self.check(opt)
        if "vit" in self.options:
            from ahiq.models.ahiq import check_architecture  # torch loads only after every other check passed

            check_architecture(model_config(opt))  # every combination builds (on the meta device) or is refused here
        return opt

    def earlier(self, chosen: dict) -> dict:
        """Values under the options file's, given what the defaults, the file and the flags chose: a resumed run's
        saved options (train.py)."""
        return {}

    def check(self, opt: argparse.Namespace) -> None:
        """Every value and every combination; one-line :class:`UserError` otherwise."""
        for d in self.options.values():
            check_value(d, getattr(opt, d.name))
        if opt.crop_size is not None:
            check_crop_size(opt.crop_size)
        if getattr(opt, "vit", None) is not None and ModelConfig(vit=opt.vit).patch_size not in (None, opt.patch_size) \
                and "patch_size" in self.given:
            raise UserError(f"--vit {opt.vit} does not match --patch_size {opt.patch_size}")
        if opt.pretrained_backbones is False and (opt.vit_weights or opt.cnn_weights):
            raise UserError("--pretrained_backbones false contradicts --vit_weights/--cnn_weights; drop one")

    def model_overrides(self, opt: argparse.Namespace) -> dict:
        """Architecture options given on the command line; they override a checkpoint's stored config."""
        config = model_config(opt).to_dict()
        given = self.given | ({"vit"} if "patch_size" in self.given else set())
        return {k: config[k] for k in config if k in given}


def add_option(group, d: Declared, script: str, default=argparse.SUPPRESS, help: str | None = None,
               required: bool = False) -> None:
    """``d`` as an argparse option of ``script``; its help says the default once. ``default`` ``SUPPRESS`` (the
    scripts' own parsers, see :meth:`BaseOptions.parse`); another command that takes the option gives its default
    (and ``help``, where its meaning there differs), and the value's range is then checked as it is read."""
    text = help or d.flag.text(script)
    same = default is argparse.SUPPRESS or default == d.default_for(script)
    if same:
        shown = shown_default(d, script)
    else:
        shown = None if default is None else str(default)
    if shown is not None and "default" not in text.lower():
        text = f"{text} (default: {shown})"
    kw = {"default": default, "help": text.replace("%", "%%"), "required": required or script in d.flag.required}
    if d.flag.switch:
        group.add_argument(f"--{d.name}", action="store_true", **kw)
    elif d.true_false:
        group.add_argument(f"--{d.name}", type=_typed(d), nargs="?", const=True, metavar="{true,false}", **kw)
    else:
        metavar = "{" + ",".join(map(str, d.flag.choices)) + "}" if d.flag.choices else None
        group.add_argument(f"--{d.name}", type=_typed(d, checked=default is not argparse.SUPPRESS), metavar=metavar,
                           **kw)


def check_value(d: Declared, value) -> None:
    """``value`` of option ``d`` inside its declared range and choices, else one line naming the flag."""
    if problem := d.flag.problem(value):
        raise UserError(f"--{d.name} {value}: {problem}")


def model_config(opt: argparse.Namespace) -> ModelConfig:
    """The :class:`ModelConfig` the options describe (``--vit`` defaults to the ``--patch_size`` tag)."""
    return ModelConfig.from_dict({**vars(opt), "vit": opt.vit or VIT_BY_PATCH[opt.patch_size]})


def build(cls, values: dict):
    """A frozen config ``cls`` from option values named like its fields (config fields built from the same values)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        kind, value = hints[f.name], values.get(f.name, NOT_GIVEN)
        if is_dataclass(kind) and not isinstance(value, kind):
            value = model_config(argparse.Namespace(**values)) if kind is ModelConfig else build(kind, values)
        if value is not NOT_GIVEN:
            kwargs[f.name] = value
    return cls(**kwargs)


def script_option_names(script: str) -> set[str] | None:
    """Option names of ``train``/``test``/``score``, or None for an unknown script name."""
    try:
        module = importlib.import_module(f"ahiq.options.{script}_options")
    except ImportError:
        return None
    classes = [c for c in BaseOptions.__subclasses__() if c.__module__ == module.__name__]
    return set(classes[0]().options) if classes else None


def load_options_file(path: str, options: BaseOptions) -> dict:
    """Values from an options file (a preset, or a run's ``opt.json``), each checked like its flag."""
    preset = PRESETS / f"{path}.json"  # a preset by name (--config ntire2022) works from an installed package too
    if not Path(path).is_file() and "/" not in path and preset.is_file():
        path = str(preset)
    try:
        reading(path)
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"--config {path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f" (line {err.lineno})" if isinstance(err, json.JSONDecodeError) else ""
        raise UserError(f"--config {path}: not JSON{where}; give a preset or a run's opt.json") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: holds a {type(data).__name__}, not an object of option names and values")
    for section in SECTIONS:  # a run's configs, flattened: their fields are named like the options
        if isinstance(data.get(section), dict):
            data = {**data.pop(section), **data}
    version = data.get("config_version", CONFIG_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= CONFIG_VERSION:
        raise UserError(f"--config {path}: config_version {version!r}: this version of AHIQ reads versions 1 to "
                        f"{CONFIG_VERSION}; a newer one wrote the file (update AHIQ), or correct the number")
    writer = data.get("script")
    theirs = script_option_names(writer) if isinstance(writer, str) else None
    if writer is not None and theirs is None:
        raise UserError(f"--config {path}: \"script\": {writer!r} is not train, test or score")
    values = {}
    for key, value in data.items():
        if key in FILE_ONLY_KEYS:
            continue
        if key not in options.options:
            if theirs is not None and key in theirs:
                continue  # an option of the script that wrote the file, not of this one
            raise UserError(f"--config {path}: unknown option {key!r}; check the spelling against "
                            f"{options.parser.prog} --help")
        values[key] = _file_value(options.options[key], value, path, options.script)
    return values


def _file_value(d: Declared, value, path: str, script: str):
    """``value`` from an options file converted and checked as its flag would be."""
    if d.flag.switch and not isinstance(value, bool):
        raise UserError(f"--config {path}: {d.name} is a switch; give true or false, not {value!r}")
    if value is None and d.default_for(script) is not None:
        raise UserError(f"--config {path}: {d.name} null: give a value (the default is {d.default_for(script)})")
    if d.flag.switch or value is None:
        return value
    # as the command line gives it (keyword-argument options take JSON there too)
    text = (json.dumps(value) if isinstance(value, dict)
            else ",".join(map(str, value)) if isinstance(value, list) else str(value))
    try:
        converted = d.convert(text)
    except (ValueError, TypeError) as err:
        raise UserError(f"--config {path}: {d.name} {value!r}: {err}") from None
    if problem := d.flag.problem(converted):
        shown = f"{d.name} {value!r}" if d.flag.choices else f"--{d.name} {converted}"
        raise UserError(f"--config {path}: {shown}: {problem}")
    return converted
