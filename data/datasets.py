"""The datasets, one table (:data:`DATASETS`), and :class:`DataConfig`, the data options."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ahiq.data.records import Pair
from ahiq.utils.declare import check_choices, option
from ahiq.utils.errors import UserError, arg, flag

DATA = {"group": "data", "scripts": ("train", "test")}


def write_generated(cfg: DataConfig) -> None:
    """Write the dataset ``cfg`` names when it is generated (``synthetic``) and not there yet (under torchrun: one rank)."""
    if cfg.dataset == "synthetic":
        from ahiq.data.synthetic import ensure_synthetic

        ensure_synthetic(cfg.root, n_refs=cfg.synthetic_refs, size=cfg.synthetic_size, seed=cfg.split_seed)


@dataclass(frozen=True)
class Dataset:
    """One row of :data:`DATASETS`: score label, default split ratio and folder, label file globs (inputs no output may
    replace), whether the label file's numbers are lower = better."""

    label: str
    ratio: str = "6:2:2"
    folder: str = ""
    labels: tuple[str, ...] = ()
    raw_lower_better: bool = False


DATASETS: dict[str, Dataset] = {
    # PIPAL's validation labels are not public, so by default a tenth of its training references validates.
    "pipal": Dataset("MOS (PIPAL, Elo-based, about 900-1850)", "9:1", "PIPAL", ("Train_Label/*.txt",)),
    "synthetic": Dataset("pseudo-MOS (synthetic, 900-1850)", "3:1", "synthetic", ("Train_Label/*.txt", "synthetic.json")),
    "tid2013": Dataset("MOS (TID2013, 0-9)", folder="tid2013", labels=("mos_with_names.txt",)),
    "kadid10k": Dataset("dmos (KADID-10k, 1-5 ACR, higher = better)", folder="kadid10k", labels=("dmos.csv",)),
    "csiq": Dataset("1 - DMOS (CSIQ, DMOS 0-1)", folder="csiq", labels=("csiq.DMOS.xlsx",), raw_lower_better=True),
    "live": Dataset("100 - DMOS (LIVE, DMOS 0-100)", folder="live", labels=("dmos.mat", "refnames_all.mat"),
                    raw_lower_better=True),
    "csv": Dataset("score (labels.csv)", folder="csv", labels=("labels.csv",)),
}


@dataclass(frozen=True)
class DataConfig:
    """Which labelled pairs to use and how to split them (the data options of train.py and test.py)."""

    dataset: str = option("pipal", "dataset in its distributed layout under --data_root (synthetic: generated there; "
                          "csv: your own pairs listed in DATA_ROOT/labels.csv, header dist,ref,score[,split])",
                          **DATA, choices=tuple(DATASETS))
    data_root: str | None = option(None, "folder of the dataset: ./datasets/PIPAL, ./datasets/synthetic, "
                                   "./datasets/kadid10k ...", **DATA, shown="./datasets/<its name>")
    lower_better: bool = option(False, "csv: the scores are DMOS-like (lower = better); training and metrics use them "
                                "negated, the raw values are kept beside the predictions in <output>_labels.csv",
                                **DATA, switch=True)
    train_list: str | None = option(None, "PIPAL: one label list file (name,score) instead of Train_Label/*.txt",
                                    **DATA)
    val_list: str | None = option(None, "validation labels (name,score); replaces the held-out split. Needs "
                                  "--val_ref_dir/--val_dis_dir", **DATA)
    val_ref_dir: str | None = option(None, "reference folder of --val_list", **DATA)
    val_dis_dir: str | None = option(None, "distorted folder of --val_list", **DATA)
    split_ratio: str | None = option(None, "reference-disjoint train:val[:test] split, e.g. 9:1 or 6:2:2", **DATA,
                                     shown="9:1 (pipal), 3:1 (synthetic), 6:2:2 (the standard sets)")
    split_seed: int = option(0, "seed of the reference-disjoint split", **DATA, low=0, high=2**32 - 1)
    split_file: str | None = option(None, "reuse a split.json written by an earlier run", **DATA)
    split_by: str = option("reference", "what the random split shuffles into train/val/test: whole references (the "
                           "protocol), or single pairs (for a set of too few references to split, e.g. a one-reference "
                           "sample; its parts then share references and every table says so)", **DATA,
                           choices=("reference", "pair"))
    synthetic_refs: int = option(12, "synthetic: number of reference images", **DATA, low=2, high=9999)
    synthetic_size: int = option(128, "synthetic: image side in pixels", **DATA, low=32, high=8192)

    def __post_init__(self):
        check_choices(self)  # dataset, split_by
        if self.val_list and not (self.val_ref_dir and self.val_dis_dir):
            raise UserError(f"{arg('val_list')}needs {arg('val_ref_dir')}and {arg('val_dis_dir')}")
        if self.split_file and self.split_ratio:
            raise UserError(f"{arg('split_file')}and {arg('split_ratio')}both set; give one")
        if self.lower_better and self.dataset != "csv":
            raise UserError(f"{flag('lower_better')} is for csv datasets ({self.dataset} scores are oriented by its "
                            "loader)")
        if self.train_list and self.dataset != "pipal":
            raise UserError(f"{arg('train_list')}is for the pipal dataset")

    @property
    def root(self) -> Path:
        """``data_root``, else ``./datasets/<its folder>``."""
        return Path(self.data_root or f"./datasets/{DATASETS[self.dataset].folder}")

    @property
    def ratio(self) -> str:
        return self.split_ratio or DATASETS[self.dataset].ratio


def load_dataset(cfg: DataConfig) -> list[Pair]:
    """All labelled pairs of the dataset ``cfg`` names, in its distributed layout."""
    if cfg.dataset in ("pipal", "synthetic"):
        from ahiq.data.pipal import load_pipal_train

        write_generated(cfg)
        pairs = load_pipal_train(cfg.root, Path(cfg.train_list) if cfg.train_list else None)
    elif cfg.dataset == "csv":
        from ahiq.data.csv_labels import load_csv_dataset

        pairs = load_csv_dataset(cfg.root, cfg.lower_better)
    else:
        from ahiq.data.standard import LOADERS

        if not cfg.root.is_dir():
            raise UserError(f"{arg('data_root')}{cfg.root}: folder not found")
        pairs = LOADERS[cfg.dataset](cfg.root)
    if not pairs:
        raise UserError(f"{arg('data_root')}{cfg.root}: no labelled pairs found")
    return pairs


def label_files(cfg: DataConfig) -> list[Path]:
    """The label and split files ``cfg`` reads (inputs that no output may replace)."""
    named = [Path(p) for p in (cfg.train_list, cfg.val_list, cfg.split_file) if p]
    return named + [p for pattern in DATASETS[cfg.dataset].labels for p in sorted(cfg.root.glob(pattern))]
