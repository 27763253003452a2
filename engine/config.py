"""The running floor's configs: frozen dataclasses the options build and the engine reads, torch-free so that a
command parses (``--help``, a typo) before torch is imported."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ahiq.data.datasets import DataConfig
from ahiq.data.images import MAX_MEGAPIXELS, megapixels
from ahiq.models.config import SEED, ModelConfig
from ahiq.utils.errors import UserError, arg

# Classical metrics test.py and the experiments compare with (engine.baselines builds them with piq).
BASELINE_NAMES = ("psnr", "ssim", "ms_ssim", "vif", "fsim", "gmsd", "lpips", "dists")


@dataclass(frozen=True)
class RunConfig:
    """How the network runs (options of every script): device, precision, compile, decoding workers, seed, and the
    pixel budget per decoded image (megapixels, checked from the header)."""

    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    num_workers: int = 0
    seed: int = SEED
    max_megapixels: float = MAX_MEGAPIXELS

    @property
    def max_pixels(self) -> int:
        return megapixels(self.max_megapixels)


@dataclass(frozen=True)
class ScoreConfig:
    """What a scoring run needs: how the network runs, which network, the crop protocol, and the outputs.

    ``checkpoint`` None: the released one once downloaded; ``"none"``: random heads. ``pretrained_backbones``,
    ``vit_weights``, ``cnn_weights`` None: the backbones the checkpoint records. ``overrides``: architecture
    fields given explicitly, over the checkpoint's. ``crop_size`` None: the checkpoint's training crop, else 224.
    ``batch_size``: crops per forward pass.
    """

    run: RunConfig = RunConfig()
    checkpoint: str | None = None
    pretrained_backbones: bool | None = None
    vit_weights: str | None = None
    cnn_weights: str | None = None
    overrides: dict = field(default_factory=dict)
    crops: str = "center"
    crop_size: int | None = None
    batch_size: int = 16
    flip_tta: bool = False
    skip_bad: bool = False
    progress: bool = True
    output: str | None = None
    save_maps: str | None = None


BEST_RULES = ("sum", "either")
CONFIG_VERSION = 2
# Training options that decide what a run trains, besides every model and data field (see run_defining).
NOT_SAVED = ("allow_changes", "overwrite")  # what one command asks of the run folder, not what the run is
DEFINES_RUN = ("crop_size", "train_crop_rule", "pretrained_backbones", "vit_weights", "cnn_weights", "score_norm")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run is; stored as the run's ``opt.json`` and in its checkpoints.

    ``checkpoint``: start the fusion and head from it (its architecture is used; ``model_given`` names the
    architecture fields the user set, which must agree with it). ``crop_size`` / ``pretrained_backbones`` None:
    the checkpoint's record, else 224 / true.
    """

    run: RunConfig = RunConfig()
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    model_given: tuple[str, ...] = ()
    checkpoint: str | None = None
    pretrained_backbones: bool | None = None
    vit_weights: str | None = None
    cnn_weights: str | None = None
    name: str = "ahiq_pipal"
    checkpoints_dir: str = "./checkpoints"
    crop_size: int | None = None
    n_epoch: int = 200
    batch_size: int = 4
    learning_rate: float = 1e-4
    feature_lr_scale: float = 1.0
    weight_decay: float = 1e-5
    T_max: int = 50
    eta_min: float = 0.0
    flip: str = "horizontal"
    train_crop_rule: str = "full"
    score_norm: str = "fit"
    strict_fp32: bool = False
    grad_clip: float = 0.0
    val_freq: int = 1
    val_crops: str = "five"
    val_drop_last: bool = False
    best_rule: str = "sum"
    resume: bool = False
    allow_changes: bool = False  # with resume: the model or data may differ from the run's (not saved)
    overwrite: bool = False  # replace a run already in the folder (not saved)
    max_steps: int = 0
    time_limit: float = 0.0
    progress: bool = True
    validate_first: bool = False

    def to_dict(self) -> dict:
        """The JSON form of ``opt.json`` and checkpoints (versioned; sections flattened back by ``--config``)."""
        out = {"script": "train", "config_version": CONFIG_VERSION, **asdict(self), "model": self.model.to_dict()}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items() if k not in NOT_SAVED}


def run_defining() -> tuple[str, ...]:
    """Options that change a run's model or data (refused at ``--resume`` unless allowed): every model and data
    field, the ViT patch size, and :data:`DEFINES_RUN`."""
    return (*(f.name for f in fields(ModelConfig)), "patch_size",
            *(f.name for f in fields(DataConfig) if f.name != "skip_bad"), *DEFINES_RUN)


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
