"""What a new user meets first: the released checkpoint is the default once downloaded, every entry point reads a
checkpoint's record the same way, identical crop windows run once, grid:N covers rows and columns, and every
script's --help shows each option's default."""
from __future__ import annotations

import argparse
import importlib.util

import pytest
import torch

from ahiq.commands import score
from ahiq.commands import test as test_script
from ahiq.data.crops import crop_positions, crop_windows
from tests.conftest import ROOT, TINY_ARGS, random_pair_images, run_main, tiny_model


@pytest.fixture
def released(tmp_path, monkeypatch):
    """A random checkpoint in the authors' format at the documented default path (moved into tmp_path)."""
    from ahiq.models import hub

    model = tiny_model(4)
    path = tmp_path / "checkpoints" / "ahiq_pipal" / "AHIQ_vit_p8_epoch33-da3ea303.pth"
    path.parent.mkdir(parents=True)
    torch.save({"epoch": 32, "regressor_model_state_dict": model.regressor.state_dict(),
                "deform_net_model_state_dict": model.deform_net.state_dict(), "optimizer_state_dict": {},
                "scheduler_state_dict": {}, "loss": 0.0}, path)
    monkeypatch.setattr(hub, "RELEASED_CHECKPOINT", path)
    random_pair_images(tmp_path, [("A0001_00_00.bmp", "A0001.bmp"), ("A0001_01_00.bmp", "A0001.bmp")], 64, 64)
    return path


def test_the_released_checkpoint_is_the_default_once_downloaded(released, tmp_path, capsys, monkeypatch):
    common = [*TINY_ARGS, "--pretrained_backbones", "false", "--seed", "0", "--crop_size", "64", "--device", "cpu"]
    scored = run_main(score.main, ["--ref", tmp_path / "ref", "--dist", tmp_path / "dist", "--output",
                                   tmp_path / "s.csv", "--quiet", *common], capsys)
    assert scored.returncode == 0 and f"checkpoint={released}" in scored.stderr, scored.stderr
    tested = run_main(test_script.main, ["--ref_dir", tmp_path / "ref", "--dist_dir", tmp_path / "dist", "--crops",
                                         "center", "--output", tmp_path / "t.txt", *common], capsys)
    assert tested.returncode == 0 and f"checkpoint={released}" in tested.stderr, tested.stderr
    one = float((tmp_path / "s.csv").read_text().splitlines()[1].split(",")[2])
    assert one == pytest.approx(float((tmp_path / "t.txt").read_text().splitlines()[0].split(",")[1]), abs=1e-6)
    none = run_main(score.main, ["--ref", tmp_path / "ref", "--dist", tmp_path / "dist", "--checkpoint", "none",
                                 "--quiet", *common], capsys)
    assert none.returncode == 0 and "RANDOM heads" in none.stderr
    released.unlink()  # not downloaded: one line saying how to get it
    missing = run_main(score.main, ["--ref", tmp_path / "ref", "--dist", tmp_path / "dist", *common], capsys)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "sh download.sh" in missing.stderr and "--checkpoint none" in missing.stderr
    from ahiq.engine.loss import AHIQLoss
    from ahiq.utils.errors import UserError

    with pytest.raises(UserError, match="download.sh"):
        AHIQLoss()


def test_every_entry_point_reads_the_record_the_same_way(tmp_path, capsys):
    """A checkpoint of ours trained at crop 32 with random backbones: score_pairs, AHIQLoss and load_model use
    that crop size and those backbones with no arguments; train.py --checkpoint starts from them."""
    from ahiq.engine.loss import AHIQLoss
    from ahiq.engine.scoring import score_pairs
    from ahiq.models.checkpoint import load_model, save_checkpoint

    model = tiny_model(5)
    save_checkpoint(tmp_path / "ours.pth", model, {"train": {"crop_size": 32}})
    loaded = load_model(tmp_path / "ours.pth")
    assert loaded.record.crop_size == 32 and loaded.backbone_sources["vit"].kind == "random"
    random_pair_images(tmp_path, [("A0001_00_00.bmp", "A0001.bmp")], 48, 48)
    pair = (tmp_path / "dist" / "A0001_00_00.bmp", tmp_path / "ref" / "A0001.bmp")
    [result] = list(score_pairs(loaded, [pair], crops="five", progress=False))
    assert len(result.crop_scores) == 5 and result.score_map is None  # 32-pixel crops of a 48-pixel image
    loss = AHIQLoss(tmp_path / "ours.pth", crops="five")
    assert loss.crop_size == 32
    from ahiq.data.images import read_image

    image = lambda p: torch.from_numpy(read_image(p)).permute(2, 0, 1)[None].float() / 255  # noqa: E731
    assert float(loss.score(image(pair[0]), image(pair[1]))) == pytest.approx(result.score, abs=1e-5)


def test_identical_windows_run_once_and_grid_covers_rows(tmp_path, monkeypatch):
    from ahiq.engine.scoring import score_pairs

    assert crop_windows("random:20", 224, 224, 224, seed=0) == [(0, 0, 20)]  # any seed: one place to put it
    assert len({t for t, _ in crop_positions("grid:7", 384, 512, 224)}) > 1  # rows, not one row
    for n in (2, 3, 5, 7, 11, 20):
        positions = crop_positions(f"grid:{n}", 384, 512, 224)
        assert len(positions) == n
        if n >= 4:  # corners included
            assert {(0, 0), (160, 288)} <= set(positions)
    model = tiny_model(6)
    seen = []
    real = model.score_distorted
    monkeypatch.setattr(model, "score_distorted", lambda dist, side, return_maps=False: (
        seen.append(len(dist)), real(dist, side, return_maps))[1])
    random_pair_images(tmp_path, [("A0001_00_00.bmp", "A0001.bmp")], 32, 32)
    pair = (tmp_path / "dist" / "A0001_00_00.bmp", tmp_path / "ref" / "A0001.bmp")
    [many] = list(score_pairs(model, [pair], crops="random:20", crop_size=32, progress=False))
    assert seen == [1] and len(many.crop_scores) == 20  # one window through the network, counted 20 times
    [one] = list(score_pairs(model, [pair], crops="center", crop_size=32, progress=False))
    assert many.score == pytest.approx(one.score, abs=1e-7)


SCRIPTS = ["score.py", "test.py", "train.py", "export.py", "experiments/standard.py", "experiments/ablations.py",
           "experiments/cross_dataset.py", "experiments/demo.py", "examples/optimize_image.py", "examples/score_onnx.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_scripts_help_shows_each_default(script, monkeypatch, capsys):
    """Every option that takes a value and has no required value says its default in --help, once."""
    caught = []
    monkeypatch.setattr(argparse.ArgumentParser, "print_help", lambda self, file=None: caught.append(self))
    spec = importlib.util.spec_from_file_location(f"help_{script.replace('/', '_')}", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit):
        module.main(["--help"])
    parser = caught[0]
    formatter = parser.formatter_class(parser.prog)
    for action in parser._actions:
        if action.nargs == 0 or action.required or action.dest == "help":
            continue
        shown = (formatter._get_help_string(action) or "").replace("%(default)s", str(action.default))
        assert shown.lower().count("default") == 1, (script, action.dest, shown)
        assert "(default: None)" not in shown and ":class:" not in (parser.description or ""), (script, action.dest)
