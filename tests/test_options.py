"""Options files: presets, --config with command-line overrides, typo safety, train.sh = ntire2022.json."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from ahiq.options import test_options
from ahiq.options.train_options import TrainOptions
from tests.conftest import ROOT

PRESETS = ROOT / "options" / "presets"
# The authors' NTIRE 2022 training (spec §4), as train.sh ran it before presets existed.
NTIRE = {"dataset": "pipal", "name": "ahiq_pipal", "patch_size": 8, "crop_size": 224, "batch_size": 4,
         "learning_rate": 1e-4, "weight_decay": 1e-5, "T_max": 50, "eta_min": 0.0, "n_epoch": 200, "seed": 1919,
         "val_crops": "five", "num_workers": 8}


def test_command_line_overrides_the_file(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"learning_rate": 3e-4, "n_epoch": 7, "vit_blocks": [2, 4], "flip": "none",
                               "check_data": True, "compile": "false", "checkpoint": None}))
    opt = TrainOptions().parse(["--config", str(cfg), "--n_epoch", "9", "--flip", "vertical"])
    assert opt.n_epoch == 9 and opt.flip == "vertical"                                    # flags win
    assert opt.learning_rate == 3e-4 and opt.vit_blocks == (2, 4) and opt.check_data is True  # file values
    assert opt.compile is False and opt.checkpoint is None and opt.batch_size == 4      # converted / defaults


@pytest.mark.parametrize("content, needle", [
    ({"learning_rat": 1e-4}, "unknown option 'learning_rat'"),
    ({"precision": "fp64"}, "precision 'fp64': choose one of"),
    ({"crop_size": "big"}, "crop_size 'big'"),
    ({"skip_bad": "yes"}, "skip_bad is a switch"),
    ({"script": "evaluate"}, "is not train, test or score"),
    ([1, 2], "holds a list"),
])
def test_bad_files_are_one_line_naming_the_file(tmp_path, capsys, content, needle):
    from ahiq.commands import train

    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps(content))
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--config", str(cfg)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert needle in err and str(cfg) in err


def test_run_options_written_by_train_are_read_by_test(tmp_path, capsys):
    """A run's opt.json says it was written by train.py: test.py takes the options it shares (data, model) and
    leaves train.py's own (n_epoch, learning_rate) to it; a key neither knows is still refused."""
    from ahiq.utils.io import save_options

    opt = TrainOptions().parse(["--dataset", "synthetic", "--crop_size", "64", "--vit_blocks", "1-3"])
    save_options({"script": "train", **vars(opt)}, tmp_path)
    test_opt = test_options.TestOptions().parse(["--config", str(tmp_path / "opt.json"), "--split", "all"])
    assert test_opt.dataset == "synthetic" and test_opt.crop_size == 64 and test_opt.vit_blocks == (1, 2, 3)
    assert not hasattr(test_opt, "n_epoch")
    again = TrainOptions().parse(["--config", str(tmp_path / "opt.json")])
    assert {k: v for k, v in vars(again).items() if k != "config"} == {k: v for k, v in vars(opt).items() if k != "config"}
    data = json.loads((tmp_path / "opt.json").read_text())
    (tmp_path / "typo.json").write_text(json.dumps({**data, "n_epochs": 3}))
    with pytest.raises(Exception, match="unknown option 'n_epochs'"):
        test_options.TestOptions().parse(["--config", str(tmp_path / "typo.json")])


def test_train_sh_runs_exactly_the_ntire2022_preset(tmp_path):
    """train.sh's command line parses to the authors' NTIRE settings, and those are the preset's."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    (fake / "python3").chmod(0o755)
    proc = subprocess.run(["sh", "train.sh", "/data/PIPAL"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stderr
    argv = proc.stdout.splitlines()
    assert argv[0] == "./train.py" and "--config" in argv
    opt = TrainOptions().parse(argv[1:])
    assert {k: getattr(opt, k) for k in NTIRE} == NTIRE and opt.data_root == "/data/PIPAL"
    preset = json.loads((PRESETS / "ntire2022.json").read_text())
    assert {k: v for k, v in preset.items() if k != "script"} == NTIRE



def test_readme_option_tables_are_the_declarations():
    """The README's option tables are what the declarations make (python -m ahiq.options.tables README.md)."""
    from ahiq.options.tables import rewrite, tables

    text = (ROOT / "README.md").read_text()
    assert text.count("<!-- options: ") == 4 and rewrite(text) == text
    found = tables()
    assert "| `--seed` | `1919` | 0..2^32-1 |" in found["score"] and "`--seed`" not in found["train"]
    assert "| `--crops` | `random:20` |" in found["test"] and "| `--n_epoch` | `200` | 1..10^6 |" in found["train"]


def test_each_option_is_declared_once_and_every_script_derives_from_it():
    """One declaration per option: the parsers, ranges, configs and defaults all come from it; 1919 is written once
    in the product."""
    import dataclasses

    from ahiq.engine.config import RunConfig, TrainConfig
    from ahiq.options.base_options import BaseOptions
    from ahiq.options.export_options import ExportOptions
    from ahiq.options.score_options import ScoreOptions

    seeds = {id(cls().options["seed"].flag) for cls in (TrainOptions, test_options.TestOptions, ScoreOptions, ExportOptions)}
    assert len(seeds) == 1 and RunConfig().seed == 1919
    options = TrainOptions()
    for name, d in options.options.items():  # every default of the parser is its config field's default
        assert options.defaults()[name] == d.default_for("train")
    assert {f.name for f in dataclasses.fields(TrainConfig)} - set(options.options) == {"run", "model", "data",
                                                                                           "model_given"}

    class Twice(BaseOptions):  # two declarations of one name are refused when the parser is built
        script = "score"
        configs = (RunConfig, dataclasses.make_dataclass("X", [("seed", int, dataclasses.field(
            default=1, metadata={"flag": RunConfig.__dataclass_fields__["seed"].metadata["flag"].__class__("x")}))]))

    with pytest.raises(TypeError, match="--seed is declared twice"):
        Twice()
    product = [p for p in ROOT.rglob("*.py") if "tests" not in p.parts and not any(
        part.startswith(".") or part in ("build", "wt") for part in p.relative_to(ROOT).parts)]
    assert sum(p.read_text().count("1919") for p in product) == 1
