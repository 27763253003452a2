"""Frozen configs the options build and the engine reads; torch-free, so a command parses before torch loads."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ahiq.data.datasets import DataConfig
from ahiq.data.crops import CROP_RULES, FLIPS, PROTOCOLS, REUSE_NOTE
from ahiq.data.images import MAX_MEGAPIXELS, PIL_LIMIT_MEGAPIXELS, megapixels
from ahiq.models.config import RELEASED_NOTE, SEED, ModelConfig
from ahiq.utils.declare import SCRIPTS, option, str2bool
from ahiq.utils.errors import UserError, arg

# Classical metrics test.py and the experiments compare with (engine.baselines builds them with piq).
BASELINE_NAMES = ("psnr", "ssim", "ms_ssim", "vif", "fsim", "gmsd", "lpips", "dists")


def auto_bool(text: str) -> str | bool:
    """``auto`` or a boolean (``true/false/...``)."""
    return "auto" if text.strip().lower() == "auto" else str2bool(text)


@dataclass(frozen=True)
class RunConfig:
    """How the network runs (options of every script)."""

    device: str = option("auto", "auto (CUDA if present), cpu, cuda or cuda:N")
    precision: str = option("fp32", "fp32, or bf16 autocast (faster on GPUs and CPUs with AVX512-BF16/AMX; scores "
                            "differ from fp32 by up to a few 1e-3)", choices=("fp32", "bf16"))
    compile: bool = option(False, "torch.compile the model (worth it on GPUs for long runs; first batches are slow)")
    num_workers: int = option(0, "DataLoader worker processes for image decoding", low=0, high=256)
    seed: int = option(SEED, "random seed: random crops, random backbones the checkpoint does not record, training",
                       low=0, high=2**32 - 1, scripts=(*SCRIPTS, "export"))
    max_megapixels: float = option(MAX_MEGAPIXELS, f"pixel budget per image, checked from its header before decoding "
                                   f"({MAX_MEGAPIXELS:g}: up to ~1 GB decoded for a 16-bit image); larger images are "
                                   "refused", low=1e-3, high=PIL_LIMIT_MEGAPIXELS)  # PIL refuses larger ones anyway

    @property
    def max_pixels(self) -> int:
        return megapixels(self.max_megapixels)


W = {"group": "weights", "scripts": (*SCRIPTS, "export")}
RANDOM = "false: random init (the checkpoint's recorded seed, else --seed), announced"


@dataclass(frozen=True)
class Common:
    """What scoring and training share: how the network runs, which weights, which crop, bad pairs."""

    run: RunConfig = RunConfig()
    checkpoint: str | None = option(None, {
        "score": f"AHIQ checkpoint (the authors' release, pyiqa's mirror, or ours); default: the released one "
                 f"({RELEASED_NOTE}); none: random heads (announced)",
        "test": f"AHIQ checkpoint; default: <checkpoints_dir>/<name>/best.pth when --name is given, else the released "
                f"one ({RELEASED_NOTE}); none: random heads",
        "train": "start the fusion and head from this checkpoint (fine-tuning; its architecture is used)",
        "export": "AHIQ checkpoint: the authors' release, pyiqa's mirror or ours"}, **W, required=("export",))
    pretrained_backbones: bool | None = option(None, f"true: backbone weights by timm tag (checkpoints/backbones/, "
                                               f"the hub cache or the hub); {RANDOM}", **W,
                                               shown="the backbones the checkpoint records, else true")
    vit_weights: str | None = option(None, "local ViT weights (.npz/.safetensors/.pth/.bin)", **W)
    cnn_weights: str | None = option(None, "local ResNet weights (.safetensors/.pth/.bin)", **W)
    crop_size: int | None = option(None, {"*": "crop size in pixels, a multiple of 32", "export": "ONNX crop size, a "
                                          "multiple of 32 (pyiqa: 224 only)"}, low=32, high=8192,
                                   scripts=(*SCRIPTS, "export"), shown="the checkpoint's training crop, else 224",
                                   valid="multiples of 32, 32..8192")
    skip_bad: bool = option(False, {"train": "leave out pairs with bad images (listed) instead of stopping",
                                    "*": "score the good pairs and list the bad ones"}, switch=True)


@dataclass(frozen=True)
class ScoreConfig(Common):
    """What a scoring run needs: the crop protocol, outputs, and ``overrides`` of the checkpoint's architecture."""

    overrides: dict = field(default_factory=dict)
    crops: str = option("center", {"score": f"crop protocol ({PROTOCOLS}): the score is the mean over the crops; "
                                            f"{REUSE_NOTE}",
                                   "test": f"crop protocol ({PROTOCOLS}): the authors' test is 20 random crops; "
                                           f"{REUSE_NOTE}"}, group="scoring", scripts=("test", "score"),
                        defaults={"test": "random:20"}, valid=f"{PROTOCOLS} (N 1..10,000)")
    batch_size: int = option(16, "crops per forward pass (memory grows with it, not with the number of pairs)",
                             group="scoring", scripts=("test", "score"), low=1, high=65536)
    flip_tta: bool = option(False, "also score the left-right flipped pair and average (test-time augmentation)",
                            group="test", scripts=("test",))
    progress: bool = True
    output: str | None = option(None, {
        "score": "CSV file (dist,ref,score), written atomically, or - for standard output; a stopped run continues "
                 "from its journal (<output>.journal) when run again with the same settings",
        "test": "name,score file (default: beside the checkpoint: its run folder's results.txt for a run's best.pth, "
                "else <checkpoint stem>_results.txt next to the file; the released one: checkpoints/<name>/results.txt; "
                "--checkpoint none: ./results.txt); a stopped run continues from its journal (<output>.journal) when "
                "run again with the same settings"}, group="scoring", scripts=("test", "score"))
    save_maps: str | None = option(None, "folder for one PNG per pair: the image beside its score and weight maps",
                                   group="scoring", scripts=("test", "score"))


@dataclass(frozen=True)
class RunFolder:
    """Where a training run (and its test results) live: ``<checkpoints_dir>/<name>/``."""

    name: str = option("ahiq_pipal", "experiment name: checkpoints/<name>/", group="run folder",
                       scripts=("train", "test"))
    checkpoints_dir: str = option("./checkpoints", "where experiments live", group="run folder",
                                  scripts=("train", "test"))


@dataclass(frozen=True)
class TestConfig(RunFolder):
    """What test.py adds to scoring: which pairs, labels, extra outputs, and the label-scale policy."""

    score: ScoreConfig = ScoreConfig()
    data: DataConfig | None = None
    split: str | None = option(None, "which part of --dataset to score", group="test", scripts=("test",),
                               choices=("train", "val", "test", "all"), shown="test if the split has one, else val")
    ref_dir: str | None = option(None, "reference folder (instead of --dataset)", group="test", scripts=("test",))
    dist_dir: str | None = option(None, "distorted folder, paired with --ref_dir by name", group="test",
                                  scripts=("test",))
    labels: str | None = option(None, "labels of --dist_dir (name,score) for metrics", group="test", scripts=("test",))
    ntire_zip: str | None = option(None, "also write the NTIRE submission zip (output.txt + readme.txt)",
                                   group="test", scripts=("test",))
    plot: str | None = option(None, "PNG of predictions against labels (needs labels)", group="test", scripts=("test",))
    baselines: str | None = option(None, f"also score the same pairs with classical metrics (piq): "
                                   f"{', '.join(BASELINE_NAMES)}, all, or none; prints and writes <output>_baselines.csv "
                                   "(per pair), _comparison.md/.csv, _types.csv (SRCC per distortion type), "
                                   "_scatter.png, _types.png (needs labels)", group="test", scripts=("test",))
    type_min_pairs: int = option(5, "the fewest pairs of a distortion type that get a correlation in the per-type "
                                 "tables of --baselines (a type with fewer shows its count and n/a)", group="test",
                                 scripts=("test",), low=1, high=10**6)
    denormalize: str | bool = option("auto", "map predictions back to the training label scale stored in the "
                                     "checkpoint: auto = only when the test labels are on that scale (same dataset, "
                                     "labels within the training range); otherwise the raw network output is written "
                                     "and RMSE is only reported after the fitted logistic mapping", group="test",
                                     scripts=("test",), parse=auto_bool, valid="`auto`, `true`, `false`")


BEST_RULES = ("sum", "either")
CONFIG_VERSION = 2
# Training options that decide what a run trains, besides every model and data field (see run_defining).
NOT_SAVED = ("allow_changes", "overwrite")  # what one command asks of the run folder, not what the run is
DEFINES_RUN = ("crop_size", "train_crop_rule", "pretrained_backbones", "vit_weights", "cnn_weights", "score_norm")
T = {"group": "training", "scripts": ("train",)}


@dataclass(frozen=True)
class TrainConfig(Common, RunFolder):
    """Everything a training run is; stored as the run's ``opt.json`` and in its checkpoints."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    model_given: tuple[str, ...] = ()
    n_epoch: int = option(200, "total epochs", **T, low=1, high=10**6)
    batch_size: int = option(4, "pairs per step (per process under torchrun)", **T, low=1, high=65536)
    learning_rate: float = option(1e-4, "Adam learning rate of both groups", **T, low=1e-12, high=1e3)
    feature_lr_scale: float = option(1.0, "learning-rate factor for the weights of the three layers that read the "
                                     "backbone features (regressor.down_channel, deform_net.conv_offset, "
                                     "deform_net.deform); 1 = the authors' two groups; the demo's short schedule uses "
                                     "0.3", **T, low=1e-6, high=1e6)
    weight_decay: float = option(1e-5, "Adam weight decay", **T, low=0, high=1e3)
    T_max: int = option(50, "cosine annealing period in iterations (stepped per step); 0: one half period over the "
                        "whole run (n_epoch x steps per epoch), ending at --eta_min", **T, low=0, high=10**9)
    eta_min: float = option(0.0, "cosine annealing minimum learning rate", **T, low=0, high=1e3)
    flip: str = option("horizontal", "random flip; vertical replicates the authors' accidental up-down flip", **T,
                       choices=FLIPS)
    train_crop_rule: str = option("full", "training crop positions: full = every position; authors = the release's "
                                  "randint(0, H - crop), which never reaches the last row and column", **T,
                                  choices=CROP_RULES)
    score_norm: str = option("fit", "fit: min-max fitted on training scores, stored in the checkpoint and used for "
                             "val/test; per_split: the authors' min-max within each split; none: raw scores", **T,
                             choices=("fit", "per_split", "none"))
    strict_fp32: bool = option(False, "fp32 training on GPUs without TF32 (slower); false: PyTorch's own TF32 "
                               "settings", **T)
    grad_clip: float = option(0.0, "clip the gradient norm of the trained parameters to this value (0: off, the "
                              "authors')", **T, low=0, high=1e9)
    val_freq: int = option(1, "validate every N epochs", **T, low=1, high=10**6)
    val_crops: str = option("five", f"crop protocol of validation (authors: five); {REUSE_NOTE}", **T,
                            valid=PROTOCOLS)
    val_drop_last: bool = option(False, "true replays the release's drop_last=True: validation leaves out the last "
                                 "partial batch of --batch_size pairs; false scores every pair", **T)
    best_rule: str = option("sum", "when best.pth is written: sum = SRCC + PLCC improved; either = the release's SRCC "
                            "or PLCC improved (both bests then move to the new epoch's values)", **T, choices=BEST_RULES)
    resume: bool = option(False, "continue checkpoints/<name>/last.pth (weights, optimiser, scheduler, epoch, RNG) "
                          "with the run's own options (checkpoints/<name>/opt.json); options given here override them",
                          **T, switch=True)
    allow_changes: bool = option(False, "with --resume: accept options that change the run's model or data (crop, "
                                 "architecture, backbones, dataset, split), which are refused otherwise", **T,
                                 switch=True)
    overwrite: bool = option(False, "replace the run already in checkpoints/<name>/ (its checkpoints, options, split, "
                             "log and TensorBoard scalars); without it, a folder that holds a run is refused unless "
                             "--resume", **T, switch=True)
    max_steps: int = option(0, "stop each epoch after N steps (0: full epoch)", **T, low=0, high=10**9)
    time_limit: float = option(0.0, "stop training after this many seconds: at an epoch's end when another epoch "
                               "would not fit (save last.pth; validation as --val_freq says), else inside the epoch "
                               "with the position saved in last.pth (--resume continues it exactly); 0: no limit", **T,
                               low=0, high=1e9)
    progress: bool = option(True, "tqdm progress bar by steps (the log gets one line per epoch either way)", **T)
    validate_first: bool = option(False, "validate once before the first step (logged as epoch 0; the starting point "
                                  "of a fine-tuning run from --checkpoint)", **T)

    def to_dict(self) -> dict:
        """The JSON form of ``opt.json`` and checkpoints (versioned; sections flattened back by ``--config``)."""
        out = {"script": "train", "config_version": CONFIG_VERSION, **asdict(self), "model": self.model.to_dict()}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items() if k not in NOT_SAVED}


def run_defining() -> tuple[str, ...]:
    """Options that change a run's model or data: model and data fields, ``patch_size``, :data:`DEFINES_RUN`."""
    return (*(f.name for f in fields(ModelConfig)), "patch_size", *(f.name for f in fields(DataConfig)), *DEFINES_RUN)


def parse_baselines(text: str) -> list[str]:
    """``'psnr,ssim'`` -> ``['psnr', 'ssim']``; ``all`` -> every one of :data:`BASELINE_NAMES`; ``none`` -> AHIQ alone."""
    names = [n.strip().lower().replace("-", "_") for n in text.split(",") if n.strip()]
    if names in ([], ["none"]):
        return []
    if names == ["all"]:
        return list(BASELINE_NAMES)
    unknown = [n for n in names if n not in BASELINE_NAMES]
    if unknown:
        raise UserError(f"{arg('baselines')}{text}: unknown metric {', '.join(unknown)}; choose from "
                        f"{', '.join(BASELINE_NAMES)}, all or none")
    return list(dict.fromkeys(names))
