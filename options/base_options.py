"""Options shared by train.py, test.py and score.py: run, model, backbone weights.

Options flow one way: command line (over an optional ``--config`` file) -> checked values -> frozen configs
(:func:`build`; ``ModelConfig``, ``DataConfig``, ``RunConfig``, ``ScoreConfig``, ``TrainConfig``) for the floors
below, which never see argparse. Every value is checked here, before any data or model work: types, ranges,
finiteness, combinations, and the architecture itself (built on the meta device). Which options the user gave
comes from argparse (a parse into a namespace of sentinels), and abbreviations are refused (``--crop_s``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

from ahiq.models.config import CHOICES, DEFAULT_CNN, DEFAULT_CNN_STAGE, DEFAULT_VIT_BLOCKS, NORMALISATIONS, VIT_BY_PATCH
from ahiq.data.images import MAX_MEGAPIXELS, PIL_LIMIT_MEGAPIXELS
from ahiq.engine.config import CONFIG_VERSION
from ahiq.models.config import ModelConfig
from ahiq.utils.errors import UserError
from ahiq.utils.inputs import reading

# Valid values of numeric options: (low, high), both included. Every numeric option of every script is here.
RANGES: dict[str, tuple[float, float]] = {
    "seed": (0, 2**32 - 1), "split_seed": (0, 2**32 - 1), "num_workers": (0, 256), "crop_size": (32, 8192),
    "cnn_stage": (1, 4), "patch_size": (8, 16), "batch_size": (1, 65536), "n_epoch": (1, 10**6),
    "val_freq": (1, 10**6), "max_steps": (0, 10**9), "T_max": (0, 10**9), "synthetic_refs": (2, 9999),
    "synthetic_size": (32, 8192), "learning_rate": (1e-12, 1e3), "feature_lr_scale": (1e-6, 1e6),
    "weight_decay": (0, 1e3), "eta_min": (0, 1e3), "grad_clip": (0, 1e9), "time_limit": (0, 1e9),
    "max_megapixels": (1e-3, PIL_LIMIT_MEGAPIXELS),  # PIL refuses larger images whatever we allow
}
NOT_GIVEN = object()  # the default of every option while finding out which ones the user gave
PRESETS = Path(__file__).resolve().parent / "presets"
ARCHITECTURE = "architecture (a checkpoint records its own; these change it: ablations, tests)"


def str2bool(text: str) -> bool:
    """``true/false/yes/no/1/0`` -> bool (argparse's ``type=bool`` would take any text as True)."""
    value = str(text).strip().lower()
    if value in ("true", "yes", "1", "on"):
        return True
    if value in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def int_list(text: str) -> tuple[int, ...]:
    """``'1,2,3'`` or ``'1-5'`` -> tuple of ints."""
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(v) for v in text.split("-"))
            return tuple(range(lo, hi + 1))
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,2,3 or 1-5, got {text!r}") from None


def json_dict(text: str) -> dict:
    """``'{"depth": 2}'`` -> dict (keyword arguments given on the command line)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'expected a JSON object like {{"depth": 2}}, got {text!r}')
    return value


def add_bool(group, name: str, default: bool | None, help: str) -> None:
    """A true/false option that also works alone (``--validate_first`` means true)."""
    group.add_argument(name, type=str2bool, nargs="?", const=True, default=default, metavar="{true,false}", help=help)


class OneDefaultHelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` where the help text does not already say its default (``None`` reads ``none``);
    the description and the examples at the end keep their lines."""

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


class BaseOptions:
    """Parse options common to every script; subclasses add theirs in :meth:`initialize`."""

    description = "AHIQ"
    first_groups: tuple[str, ...] = ()  # the task's own groups, shown first by --help
    usage: str | None = None  # the usage line (None: argparse lists every option)
    examples = ""  # usage examples shown at the end of --help (%(prog)s: the command as the user ran it)

    def __init__(self, prog: str | None = None):
        self.parser = OneLineErrors(prog=prog, usage=self.usage, description=self.description,
                                    formatter_class=OneDefaultHelpFormatter, allow_abbrev=False,
                                    epilog=f"examples:\n{self.examples}" if self.examples else None)
        self.initialize(self.parser)
        # --help: the task's options first, the run and weights next, the architecture (ablations) last
        rank = {title: k for k, title in enumerate((*self.first_groups, "weights", "run", ARCHITECTURE))}
        self.parser._action_groups.sort(key=lambda group: rank.get(group.title, -1))

    def initialize(self, p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("run")
        g.add_argument("--config", type=str, default=None,
                       help="options file: a preset by name (ntire2022, authors_release, ...: options/presets/*.json) or "
                            "path, or a run's opt.json; flags given on the command line override it")
        g.add_argument("--device", type=str, default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
        g.add_argument("--precision", type=str, default="fp32", choices=["fp32", "bf16"],
                       help="fp32, or bf16 autocast (faster on GPUs and CPUs with AVX512-BF16/AMX; scores differ from "
                            "fp32 by up to a few 1e-3)")
        add_bool(g, "--compile", False, "torch.compile the model (worth it on GPUs for long runs; first batches are slow)")
        g.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes for image decoding")
        g.add_argument("--seed", type=int, default=1919, help="random seed, 0..2^32-1 (the authors' 1919)")
        g.add_argument("--crop_size", type=int, default=224, help="crop size in pixels, a multiple of 32")
        g.add_argument("--max_megapixels", type=float, default=MAX_MEGAPIXELS,
                       help=f"pixel budget per image, checked from its header before decoding ({MAX_MEGAPIXELS:g}: up "
                            f"to ~1 GB decoded for a 16-bit image); larger images are refused, up to "
                            f"{PIL_LIMIT_MEGAPIXELS:g}")

        g = p.add_argument_group(ARCHITECTURE)
        g.add_argument("--patch_size", type=int, default=8, choices=[8, 16],
                       help="ViT patch size; picks the default ViT tag for that patch size when --vit is not given")
        g.add_argument("--vit", type=str, default=None,
                       help=f"timm ViT name.tag (default {VIT_BY_PATCH[8]} for patch 8, {VIT_BY_PATCH[16]} for 16)")
        g.add_argument("--vit_blocks", type=int_list, default=DEFAULT_VIT_BLOCKS,
                       help="1-based ViT blocks whose outputs are used, e.g. 1-5 or 1,3,5")
        g.add_argument("--cnn", type=str, default=DEFAULT_CNN, help="timm ResNet name.tag")
        g.add_argument("--cnn_stage", type=int, default=DEFAULT_CNN_STAGE,
                       help="ResNet stage (1 = layer1) whose block outputs are used")
        g.add_argument("--vit_kwargs", type=json_dict, default={},
                       help='timm keyword arguments that change the ViT, as JSON, e.g. \'{"depth": 2, "embed_dim": '
                            '32, "num_heads": 2}\' (ablations, fast tests; needs random or matching weights)')
        g.add_argument("--cnn_kwargs", type=json_dict, default={},
                       help='timm keyword arguments that change the ResNet, as JSON, e.g. \'{"layers": [1, 1, 1, 1], '
                            '"channels": [16, 32, 64, 128], "stem_width": 16}\'')
        g.add_argument("--head_kwargs", type=json_dict, default={},
                       help='widths of the score head, as JSON: channels (256), hidden (1024), smoothed (512)')
        g.add_argument("--fusion_kwargs", type=json_dict, default={},
                       help='width of the deformable fusion, as JSON: hidden (512)')
        g.add_argument("--normalization", type=str, default="authors", choices=sorted(NORMALISATIONS),
                       help="input normalisation: authors = (x-0.5)/0.5 (the released model); imagenet = "
                            "pyiqa's mean/std, which gives different scores")
        g.add_argument("--branches", type=str, default="both", choices=CHOICES["branches"],
                       help="both: ViT + CNN (the authors'); vit: ViT features only (needs --fusion none); cnn: CNN "
                            "features only, the deformable conv steered by the reference's own CNN features, the "
                            "score grid still the --patch_size grid")
        g.add_argument("--fusion", type=str, default="deform", choices=CHOICES["fusion"],
                       help="how the CNN features reach the ViT grid: deform = deformable 3x3 conv steered by the "
                            "reference (the authors'); conv = a plain 3x3 conv of the same shape; none = CNN features "
                            "only averaged onto the grid (no parameters)")
        g.add_argument("--pooling", type=str, default="weighted", choices=CHOICES["pooling"],
                       help="weighted: score = sum(f*w)/sum(w) with the patch weight map w (the authors'); "
                            "mean: score = mean of the patch scores f (no weight branch)")
        g.add_argument("--deform_impl", type=str, default="sampled", choices=["sampled", "torchvision"],
                       help="deformable conv: sampled (bilinear sampling + GEMM, faster) or torchvision")

        g = p.add_argument_group("weights")
        g.add_argument("--checkpoint", type=str, default=None,
                       help="AHIQ checkpoint (authors' release, pyiqa's mirror, or ours)")
        add_bool(g, "--pretrained_backbones", True, "true: backbone weights by timm tag (checkpoints/backbones/, the "
                 "hub cache or the hub); false: random init (tests, demo), announced on stderr")
        g.add_argument("--vit_weights", type=str, default=None, help="local ViT weights (.npz/.safetensors/.pth/.bin)")
        g.add_argument("--cnn_weights", type=str, default=None, help="local ResNet weights (.safetensors/.pth/.bin)")

    def parse(self, argv: list[str] | None = None) -> argparse.Namespace:
        """The checked options. ``self.given``: the options given on the command line; ``self.from_file``: those
        an options file set."""
        argv = sys.argv[1:] if argv is None else argv
        pre, _ = self.parser.parse_known_args(argv)
        self.from_file: set[str] = set()
        if pre.config:
            values = load_options_file(pre.config, self.parser)
            self.from_file = set(values)
            self.parser.set_defaults(**values)
        opt = self.parser.parse_args(argv)
        probe = argparse.Namespace(**{a.dest: NOT_GIVEN for a in self.parser._actions if a.dest != argparse.SUPPRESS})
        self.parser.parse_args(argv, probe)
        self.given = {k for k, v in vars(probe).items() if v is not NOT_GIVEN}
        self.check(opt)
        from ahiq.models.ahiq import check_architecture  # torch loads only after every other check passed

        check_architecture(model_config(opt))  # every combination builds (on the meta device) or is refused here
        return opt

    def check(self, opt: argparse.Namespace) -> None:
        """Every value and every combination; one-line :class:`UserError` otherwise."""
        for name, value in vars(opt).items():
            check_range(name, value)
        if opt.crop_size is not None and opt.crop_size % 32:
            raise UserError(f"--crop_size {opt.crop_size}: must be a positive multiple of 32")
        if opt.vit is not None and ModelConfig(vit=opt.vit).patch_size not in (None, opt.patch_size) \
                and "patch_size" in self.given:
            raise UserError(f"--vit {opt.vit} does not match --patch_size {opt.patch_size}")
        if opt.pretrained_backbones is False and (opt.vit_weights or opt.cnn_weights):
            raise UserError("--pretrained_backbones false contradicts --vit_weights/--cnn_weights; drop one")

    def model_overrides(self, opt: argparse.Namespace) -> dict:
        """Architecture options given on the command line; they override a checkpoint's stored config."""
        config = model_config(opt).to_dict()
        given = self.given | ({"vit"} if "patch_size" in self.given else set())
        return {k: config[k] for k in config if k in given}


def check_range(name: str, value) -> None:
    """A numeric option inside :data:`RANGES` (and finite), as a one-line :class:`UserError`."""
    if name not in RANGES or value is None:
        return
    lo, hi = RANGES[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and lo <= value <= hi):
        raise UserError(f"--{name} {value}: must be a number from {lo:g} to {hi:g}")


def model_config(opt: argparse.Namespace) -> ModelConfig:
    """The :class:`ModelConfig` the options describe (``--vit`` defaults to the ``--patch_size`` tag)."""
    return ModelConfig.from_dict({**vars(opt), "vit": opt.vit or VIT_BY_PATCH[opt.patch_size]})


def build(cls, values: dict):
    """A frozen config ``cls`` from option values named like its fields; fields that are configs themselves are
    built from the same values (``RunConfig`` inside ``ScoreConfig``) unless given built. Missing values keep the
    field's default."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        kind, value = hints[f.name], values.get(f.name, NOT_GIVEN)
        if is_dataclass(kind) and not isinstance(value, kind):
            value = model_config(argparse.Namespace(**values)) if kind is ModelConfig else build(kind, values)
        if value is not NOT_GIVEN:
            kwargs[f.name] = value
    return cls(**kwargs)


def scoring_defaults(p: argparse.ArgumentParser) -> None:
    """For scripts that score with a checkpoint: crop size and backbones default to what the checkpoint records."""
    for action in p._actions:
        if action.dest == "crop_size":
            action.default = None
            action.help = "crop size in pixels, a multiple of 32 (default: the checkpoint's training crop, else 224)"
        elif action.dest == "pretrained_backbones":
            action.default = None
            action.help = ("true: backbone weights by timm tag (checkpoints/backbones/, the hub cache or the hub); "
                           "false: random init (the checkpoint's recorded seed, else --seed, as train.py draws them), "
                           "announced (default: the backbones the checkpoint records, else true)")


def add_run_folder_options(p: argparse.ArgumentParser) -> None:
    """``--name`` and ``--checkpoints_dir``: where a training run (and its test results) live."""
    g = p.add_argument_group("run folder")
    g.add_argument("--name", type=str, default="ahiq_pipal", help="experiment name: checkpoints/<name>/")
    g.add_argument("--checkpoints_dir", type=str, default="./checkpoints", help="where experiments live")


# Keys of an options file that are not options: which script wrote it, and the format of a run's opt.json.
FILE_ONLY_KEYS = ("script", "config_version", "model_given")
# Sections of a run's opt.json (the configs it ran with), read as the options they hold.
SECTIONS = ("run", "model", "data")


def script_option_names(script: str) -> set[str] | None:
    """Option names (dests) of ``train``/``test``/``score``, or None for an unknown script name."""
    import importlib

    try:
        module = importlib.import_module(f"ahiq.options.{script}_options")
    except ImportError:
        return None
    classes = [c for c in vars(module).values()
               if isinstance(c, type) and issubclass(c, BaseOptions) and c.__module__ == module.__name__]
    return {a.dest for a in classes[0]().parser._actions} if classes else None


def load_options_file(path: str, parser: argparse.ArgumentParser) -> dict:
    """Defaults from an options file (a preset, or a run's ``opt.json`` with its config sections), each value
    checked like a flag.

    Every key must be an option of this script; a file that says which script wrote it (``"script": "train"``,
    as every ``opt.json`` does) may also hold that script's other options, which are left to it. A key known
    to neither is refused with one line naming the key and the file (a typo would otherwise be silently ignored).
    """
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
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    writer = data.get("script")
    theirs = script_option_names(writer) if isinstance(writer, str) else None
    if writer is not None and theirs is None:
        raise UserError(f"--config {path}: \"script\": {writer!r} is not train, test or score")
    defaults = {}
    for key, value in data.items():
        if key in FILE_ONLY_KEYS or key == "config":
            continue
        if key not in actions:
            if theirs is not None and key in theirs:
                continue  # an option of the script that wrote the file, not of this one
            raise UserError(f"--config {path}: unknown option {key!r}; check the spelling against {parser.prog} --help")
        defaults[key] = _file_value(actions[key], key, value, path)
    return defaults


def _file_value(action: argparse.Action, key: str, value, path: str):
    """``value`` from an options file converted and checked as the flag ``--key`` would be."""
    if action.nargs == 0:  # switches take true/false
        if not isinstance(value, bool):
            raise UserError(f"--config {path}: {key} is a switch; give true or false, not {value!r}")
        return value
    if value is None:
        if action.default is not None:
            raise UserError(f"--config {path}: {key} null: give a value (the default is {action.default})")
        return value
    if isinstance(value, dict):
        text = json.dumps(value)  # keyword-argument options take JSON on the command line too
    else:
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    try:
        converted = action.type(text) if action.type else text
    except (argparse.ArgumentTypeError, ValueError, TypeError) as err:
        raise UserError(f"--config {path}: {key} {value!r}: {err}") from None
    if action.choices is not None and converted not in action.choices:
        raise UserError(f"--config {path}: {key} {value!r}: choose one of {', '.join(map(str, action.choices))}")
    try:
        check_range(key, converted)
    except UserError as err:
        raise UserError(f"--config {path}: {err}") from None
    return converted
