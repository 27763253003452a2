"""Training: a short run with validation and checkpoints, bit-identical resume, options and logs."""
from __future__ import annotations

import json
import math

import pytest
import torch

from ahiq.commands import train
from ahiq.models.checkpoint import read_checkpoint
from tests.conftest import TINY_ARGS

BASE = ["--dataset", "synthetic", "--synthetic_refs", "4", "--synthetic_size", "64", "--crop_size", "32",
        "--batch_size", "4", "--pretrained_backbones", "false", "--device", "cpu", "--num_workers", "0",
        "--seed", "7", "--max_steps", "3", "--val_crops", "center", "--progress", "false", *TINY_ARGS]


@pytest.fixture(scope="module")
def data_root(synthetic_root):
    return synthetic_root(4, 64)  # BASE's --synthetic_refs 4 --synthetic_size 64 (--split_seed 0)


def _run(data_root, ckpt_dir, name, *extra):
    return train.main([*BASE, "--data_root", data_root, "--checkpoints_dir", str(ckpt_dir), "--name", name, *extra])


def test_short_training_writes_checkpoints_logs_and_options(data_root, tmp_path, capsys):
    best = _run(data_root, tmp_path, "short", "--n_epoch", "2")
    out = capsys.readouterr().out
    run = tmp_path / "short"
    expected = {"best.pth", "last.pth", "opt.json", "opt.txt", "split.json", "train.log", "tb"}
    assert expected <= {p.name for p in run.iterdir()}
    assert out.splitlines()[0].startswith("run: world_size=1 device=cpu")
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2 and all("val SRCC=" in line and "main=" in line for line in epochs)
    assert all("PLCC(fitted)=" in line and "RMSE(fitted)=" in line for line in epochs)  # the field's protocol
    assert all(math.isfinite(best[k]) for k in ("SRCC", "PLCC", "KRCC", "RMSE", "main"))
    deform, regressor, meta = read_checkpoint(run / "last.pth")
    assert meta["score_norm"]["kind"] == "minmax" and meta["score_norm"]["hi"] > meta["score_norm"]["lo"]
    assert meta["model_config"]["vit"] == "vit_base_patch8_224.augreg_in21k_ft_in1k"
    raw = torch.load(run / "last.pth", weights_only=True)
    assert raw["epoch"] == 1 and raw["scheduler_state_dict"]["last_epoch"] == 6
    assert len(raw["optimizer_state_dict"]["param_groups"]) == 2
    split = json.loads((run / "split.json").read_text())["splits"]
    assert len(split["train"]) == 3 and len(split["val"]) == 1 and not set(split["train"]) & set(split["val"])
    saved = json.loads((run / "opt.json").read_text())
    assert saved["learning_rate"] == 1e-4 and saved["T_max"] == 50 and saved["n_epoch"] == 2
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert "epoch 2/2" in (run / "train.log").read_text()


def test_resume_is_bit_identical(data_root, tmp_path):
    _run(data_root, tmp_path, "whole", "--n_epoch", "2")
    _run(data_root, tmp_path, "parts", "--n_epoch", "1")
    _run(data_root, tmp_path, "parts", "--n_epoch", "2", "--resume")
    a = torch.load(tmp_path / "whole" / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "parts" / "last.pth", weights_only=True)
    for key in ("deform_net_model_state_dict", "regressor_model_state_dict"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), name
    for sa, sb in zip(a["optimizer_state_dict"]["state"].values(), b["optimizer_state_dict"]["state"].values()):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert a["scheduler_state_dict"] == b["scheduler_state_dict"] and a["epoch"] == b["epoch"] == 1
    assert a["best"] == b["best"]
    # The random-number streams continue where they stopped (they feed the loader's worker seeds and anything
    # random in a step): the resumed run ends in the very state of the uninterrupted one, not in a fresh seed's.
    ra, rb = a["rng"][0], b["rng"][0]
    assert torch.equal(ra["torch"], rb["torch"]) and ra["python"] == rb["python"]
    assert ra["numpy"] == rb["numpy"] and len(ra["numpy"]["state"]["key"]) == 624  # plain values, no arrays


def test_config_file_round_trip(data_root, tmp_path):
    from ahiq.options.train_options import TrainOptions

    _run(data_root, tmp_path, "cfg", "--n_epoch", "1", "--learning_rate", "3e-4")
    opt = TrainOptions().parse(["--config", str(tmp_path / "cfg" / "opt.json"), "--n_epoch", "5"])
    assert opt.learning_rate == 3e-4 and opt.n_epoch == 5 and opt.crop_size == 32 and opt.dataset == "synthetic"


def test_feature_lr_scale_groups_and_whole_run_cosine(data_root, tmp_path, capsys):
    from ahiq.engine.training import optimizer_groups

    _run(data_root, tmp_path, "scaled", "--n_epoch", "2", "--learning_rate", "3e-4", "--feature_lr_scale", "0.1",
         "--T_max", "0")
    raw = torch.load(tmp_path / "scaled" / "last.pth", weights_only=True)
    groups = raw["optimizer_state_dict"]["param_groups"]
    # regressor rest, regressor.down_channel.weight, deform_net rest, conv_offset.weight + deform.weight
    assert [len(g["params"]) for g in groups] == [11, 1, 6, 2]
    assert [g["initial_lr"] for g in groups] == pytest.approx([3e-4, 3e-5, 3e-4, 3e-5])
    # --T_max 0: one half cosine over 2 epochs x 3 steps, so the last step reaches eta_min = 0
    assert raw["scheduler_state_dict"]["T_max"] == 6 and raw["scheduler_state_dict"]["last_epoch"] == 6
    assert [g["lr"] for g in groups] == pytest.approx([0, 0, 0, 0], abs=1e-12)
    from ahiq.models.ahiq import build_ahiq
    from tests.conftest import TINY

    model = build_ahiq(TINY, pretrained_backbones=False)
    capsys.readouterr()
    wide = optimizer_groups(model, 1e-3, 0.0, 0.5)
    assert [n for n, p in model.named_parameters() if any(p is q for q in wide[1]["params"])] == \
        ["regressor.down_channel.weight"]
    assert sum(len(g["params"]) for g in wide) == len([p for p in model.parameters() if p.requires_grad])
    assert len(optimizer_groups(model, 1e-3, 0.0)) == 2  # the authors' two groups at scale 1
    # resuming with other groups (a --feature_lr_scale given over the run's own) is a one-line user error
    with pytest.raises(SystemExit) as exit_info:
        _run(data_root, tmp_path, "scaled", "--n_epoch", "3", "--resume", "--feature_lr_scale", "1")
    assert exit_info.value.code == 2 and "--feature_lr_scale" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--crop_size", "100"], "multiple of 32"),
    (["--val_list", "x.txt"], "--val_list needs"),
    (["--split_ratio", "abc"], "--split_ratio"),
    (["--n_epoch", "0"], "--n_epoch 0: must be a number from 1"),
    (["--T_max", "-1"], "--T_max -1: must be a number from 0"),
    (["--feature_lr_scale", "0"], "--feature_lr_scale 0.0: must be a number from"),
    (["--pretrained_backbones", "false", "--vit_weights", "v.npz"], "contradicts"),
    (["--patch_size", "16", "--vit", "vit_base_patch8_224"], "does not match"),
])
def test_bad_option_combinations(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_missing_images_stop_training_unless_skipped(data_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    victim = sorted((root / "Train_Dis").iterdir())[5]
    victim.unlink()
    argv = [*BASE, "--dataset", "pipal", "--data_root", str(root), "--checkpoints_dir", str(tmp_path), "--n_epoch", "1"]
    with pytest.raises(SystemExit) as exit_info:
        train.main([*argv, "--name", "bad"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{victim.name}: image not found" in err and "--skip_bad" in err
    train.main([*argv, "--name", "skip", "--skip_bad"])
    assert "skipped (" in capsys.readouterr().out and (tmp_path / "skip" / "last.pth").is_file()


def test_fine_tune_from_an_authors_format_checkpoint(data_root, tmp_path, capsys):
    """--checkpoint starts the heads from the file: at lr 1e-9 they end within 1e-6 of it, and the validation
    before any step equals test.py with that file on the same split."""
    from ahiq.commands import test as test_script
    from ahiq.models.ahiq import build_ahiq
    from ahiq.options.train_options import TrainOptions
    from tests.conftest import TINY, TINY_ARGS

    torch.manual_seed(3)
    model = build_ahiq(TINY, pretrained_backbones=False)
    start = {"deform_net_model_state_dict": model.deform_net.state_dict(),
             "regressor_model_state_dict": model.regressor.state_dict()}
    given = tmp_path / "authors_format.pth"
    torch.save({"epoch": 32, **start, "optimizer_state_dict": {}, "scheduler_state_dict": {}, "loss": 0.0}, given)
    _run(data_root, tmp_path, "tune", "--n_epoch", "1", "--checkpoint", str(given), "--learning_rate", "1e-9",
         "--validate_first", "true")
    assert "epoch 0/1 (before training) val SRCC=" in capsys.readouterr().out
    raw = torch.load(tmp_path / "tune" / "last.pth", weights_only=False)
    for key, state in start.items():
        for name, tensor in state.items():
            assert (raw[key][name] - tensor).abs().max() <= 1e-6, name
    assert raw["scheduler_state_dict"]["last_epoch"] == 3  # it did take steps
    tested = test_script.main(["--checkpoint", str(given), "--checkpoints_dir", str(tmp_path), "--name", "tune",
                               "--dataset", "synthetic", "--data_root", data_root, "--synthetic_refs", "4",
                               "--synthetic_size", "64", "--split", "val", "--crops", "center", "--crop_size", "32",
                               "--batch_size", "4", "--seed", "7", "--pretrained_backbones", "false", "--device", "cpu",
                               "--output", str(tmp_path / "val.txt"), *TINY_ARGS])
    first = raw["start_metrics"]
    for key in ("SRCC", "PLCC", "KRCC"):  # validation compares normalised labels: the same up to scale
        assert first[key] == pytest.approx(tested[key], abs=1e-9), key
    assert first["PLCC_fitted"] == pytest.approx(tested["PLCC_fitted"], abs=1e-4)
    # our checkpoint brings its architecture; a contradicting option is one line
    from ahiq.engine.trainer import adopt_architecture
    from ahiq.models.checkpoint import read_record

    options = TrainOptions()
    cfg = options.config(options.parse(["--checkpoint", str(tmp_path / "tune" / "last.pth")]))
    adopted = adopt_architecture(cfg.model, cfg.model_given, read_record(read_checkpoint(cfg.checkpoint)[2]), "")
    assert (adopted.vit_blocks, adopted.vit_kwargs, adopted.head_kwargs) == (TINY.vit_blocks, TINY.vit_kwargs,
                                                                            TINY.head_kwargs)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--checkpoint", str(tmp_path / "tune" / "last.pth"), "--vit_blocks", "1-5", "--checkpoints_dir",
                    str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "was trained with vit_blocks 1,3, the options say 1,2,3,4,5" in err


def test_validation_encodes_each_reference_once(data_root, tmp_path, monkeypatch):
    from ahiq.models.ahiq import AHIQ

    encoded = []
    original = AHIQ.encode_reference

    def counting(self, ref):
        encoded.append(len(ref))
        return original(self, ref)

    monkeypatch.setattr(AHIQ, "encode_reference", counting)
    best = _run(data_root, tmp_path, "val_reuse", "--n_epoch", "1", "--val_crops", "five")
    split = json.loads((tmp_path / "val_reuse" / "split.json").read_text())["splits"]
    log = (tmp_path / "val_reuse" / "train.log").read_text()
    assert len(split["val"]) == 1 and "val=24 pairs from 1 references" in log  # 6 batches of 4
    assert encoded == [5]  # the one validation reference's five crops, once for its 24 distorted images
    assert math.isfinite(best["SRCC"])
def test_each_dataset_has_its_own_default_folder_and_failed_set_up_leaves_no_run_folder(tmp_path, capsys):
    from ahiq.options.train_options import TrainOptions, data_config

    roots = {name: str(data_config(TrainOptions().parse(["--dataset", name, "--crop_size", "32"])).root)
             for name in ("synthetic", "pipal", "kadid10k")}
    assert roots == {"synthetic": "datasets/synthetic", "pipal": "datasets/PIPAL", "kadid10k": "datasets/kadid10k"}
    assert str(data_config(TrainOptions().parse(["--dataset", "pipal", "--data_root", "x"])).root) == "x"
    ckpt_dir = tmp_path / "new" / "checkpoints"
    with pytest.raises(SystemExit) as exit_info:
        train.main([*BASE, "--dataset", "pipal", "--data_root", str(tmp_path / "absent"), "--checkpoints_dir",
                    str(ckpt_dir), "--name", "failed"])
    assert exit_info.value.code == 2 and "absent" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # neither the run folder nor the --checkpoints_dir it would have made


def test_help_shows_one_default_per_option():
    from ahiq.options.score_options import ScoreOptions
    from ahiq.options.test_options import TestOptions
    from ahiq.options.train_options import TrainOptions

    for options in (TrainOptions(), TestOptions(), ScoreOptions()):
        text = options.parser.format_help()
        for action in options.parser._actions:
            shown = action.help or ""
            assert shown.lower().count("default") <= 1, (action.dest, shown)
            assert "(default: None)" not in shown, action.dest
        assert "(default: test if the split has one, else val) (default" not in text
    lr = next(a for a in TrainOptions().parser._actions if a.dest == "learning_rate")
    assert lr.help.endswith("(default: 0.0001)")


def _script(name: str):
    """A top-level script as a module (``test.py`` would otherwise meet the standard library's ``test``)."""
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_random_backbone_checkpoint_scores_the_same_through_every_entry_point(data_root, tmp_path, capsys):
    import csv

    from ahiq.data.sampling import ScoreNorm
    from ahiq.data.images import read_image
    from ahiq.models.checkpoint import load_model
    from tests.conftest import random_pair_images

    _run(data_root, tmp_path, "prov", "--n_epoch", "1")
    ckpt = tmp_path / "prov" / "best.pth"
    _, _, meta = read_checkpoint(ckpt)
    assert meta["backbones"]["vit"] == {"kind": "random", "name": "vit_base_patch8_224.augreg_in21k_ft_in1k",
                                        "file": None, "sha256": None, "seed": 7}
    assert meta["backbones"]["cnn"]["kind"] == "random" and meta["backbones"]["cnn"]["seed"] == 7
    # 32x32 pairs, the training crop: every crop protocol (score.py centre, test.py 20 random) sees the whole image
    names = [("A0001_00_00.bmp", "A0001.bmp"), ("A0002_05_01.bmp", "A0002.bmp")]
    random_pair_images(tmp_path / "pairs", names, 32, 32)
    ref_dir, dist_dir = tmp_path / "pairs" / "ref", tmp_path / "pairs" / "dist"
    capsys.readouterr()

    # the README's snippet: the backbones come from the checkpoint (random ones redrawn from seed 7)
    model = load_model(ckpt)
    image = lambda p: torch.from_numpy(read_image(p)).permute(2, 0, 1)[None]  # noqa: E731
    with torch.no_grad():
        snippet = [float(model(image(dist_dir / d), image(ref_dir / r))) for d, r in names]
    assert "random init (seed 7)" in capsys.readouterr().err

    _script("score").main(["--ref", str(ref_dir), "--dist", str(dist_dir), "--checkpoint", str(ckpt),
                           "--output", str(tmp_path / "scores.csv")])
    err = capsys.readouterr().err
    assert "crop_size=32" in err and "random init (seed 7)" in err
    with open(tmp_path / "scores.csv") as fh:
        by_score_py = {row["dist"].split("/")[-1]: float(row["score"]) for row in csv.DictReader(fh)}
    _script("test").main(["--checkpoint", str(ckpt), "--ref_dir", str(ref_dir), "--dist_dir", str(dist_dir),
                          "--output", str(tmp_path / "results.txt")])
    # test.py maps predictions back to the training label scale stored in the checkpoint; undo that to compare
    norm = ScoreNorm.from_dict(meta["score_norm"])
    lines = (tmp_path / "results.txt").read_text().splitlines()
    by_test_py = dict(zip([line.split(",")[0] for line in lines], norm([float(x.split(",")[1]) for x in lines])))
    for (d, _), s in zip(names, snippet):
        assert abs(by_score_py[d] - s) <= 1e-5 and abs(by_test_py[d] - s) <= 1e-5, (d, s, by_score_py, by_test_py)
    assert max(snippet) - min(snippet) > 1e-4  # the comparison is not between constants

    # other backbones than the recorded ones: used as asked, with a warning
    other = load_model(ckpt, seed=8)
    assert "trained with vit = " in capsys.readouterr().err and other.backbone_sources["vit"].seed == 8
    with torch.no_grad():
        assert abs(float(other(image(dist_dir / names[0][0]), image(ref_dir / names[0][1]))) - snippet[0]) > 1e-6


def test_resume_by_name_reloads_the_runs_options(data_root, tmp_path, capsys):
    from ahiq.options.train_options import TrainOptions

    # a non-default crop (32) and dataset (synthetic), then only the name: the run continues to epoch 2
    _run(data_root, tmp_path, "named", "--n_epoch", "1", "--synthetic_refs", "4")
    capsys.readouterr()
    where = ["--name", "named", "--checkpoints_dir", str(tmp_path)]
    train.main([*where, "--resume", "--n_epoch", "2"])
    out, err = capsys.readouterr()
    assert f"resume: options of {tmp_path / 'named' / 'opt.json'}; given here: --n_epoch 2\n" in out
    assert "resumed from" in out and "epoch 2/2" in out
    raw = torch.load(tmp_path / "named" / "last.pth", weights_only=True)
    assert raw["epoch"] == 1 and raw["ahiq"]["train"]["crop_size"] == 32 and raw["ahiq"]["format_version"] == 2
    assert raw["ahiq"]["train"]["data"]["dataset"] == "synthetic"
    # changing the model or the data is refused with one line, unless asked for explicitly
    with pytest.raises(SystemExit) as exit_info:
        train.main([*where, "--resume", "--n_epoch", "3", "--crop_size", "64", "--split_seed", "1"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert "--crop_size 64 (run: 32), --split_seed 1 (run: 0) would change" in err and "--allow_changes" in err
    opt = TrainOptions().parse([*where, "--resume", "--crop_size", "64", "--allow_changes"])
    assert opt.crop_size == 64 and opt.dataset == "synthetic" and opt.n_epoch == 2
    assert TrainOptions().parse(where).dataset == "pipal"  # without --resume the defaults hold
