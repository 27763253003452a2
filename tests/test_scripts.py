"""The scripts end to end: checkpoints are read safely and checked before anything is built, outputs are checked
before any work, every option is checked when read, the released checkpoint is the default once downloaded, and every
script's --help shows each option's default. Every failure: exit status 2, one line on stderr, no traceback."""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ahiq.commands import score
from ahiq.commands import test as test_script
from ahiq.commands import train
from ahiq.models.checkpoint import checkpoint_dict, read_checkpoint, save_checkpoint
from ahiq.utils.errors import UserError
from tests.conftest import (ROOT, TINY, TINY_ARGS, TINY_CLI, TRAIN, fails, fingerprint, random_pair_images, refused,
                            run_main, score_main, test_main, tiny_model, unwritable_dir)


class Payload:
    """Unpickling this creates ``path``: what a malicious checkpoint would do with os.system."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


REFUSAL = "holds Python objects other than tensors; refusing to unpickle it (see README, Security)"


def _payload_checkpoint(model, path: Path, marker: Path) -> None:
    """A real checkpoint of ours with one extra key holding the payload."""
    torch.save({**checkpoint_dict(model), "extra": Payload(marker)}, path)


def test_payload_checkpoint_is_refused_by_every_script(small_model, data_root, pairs_folder, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "evil.pth"
    _payload_checkpoint(small_model, bad, marker)
    fails(capsys, score_main, ["--ref", str(pairs_folder / "ref"), "--dist", str(pairs_folder / "dist"),
                               "--checkpoint", str(bad), "--crop_size", "32", *TINY_CLI], f"{bad}: {REFUSAL}")
    fails(capsys, test_main, ["--ref_dir", str(pairs_folder / "ref"), "--dist_dir", str(pairs_folder / "dist"),
                                     "--checkpoint", str(bad), "--crop_size", "32", "--output",
                                     str(tmp_path / "r.txt"), *TINY_CLI], REFUSAL)
    fails(capsys, train.main, [*TRAIN, "--data_root", data_root, "--checkpoints_dir", str(tmp_path), "--name", "init",
                               "--checkpoint", str(bad)], REFUSAL)
    (tmp_path / "resumed").mkdir()
    _payload_checkpoint(small_model, tmp_path / "resumed" / "last.pth", marker)
    fails(capsys, train.main, [*TRAIN, "--data_root", data_root, "--checkpoints_dir", str(tmp_path), "--name",
                               "resumed", "--resume"], f"last.pth: {REFUSAL}")
    assert not marker.exists()  # the payload never ran


def test_backbone_weight_file_with_payload_is_refused(tmp_path, pairs_folder, capsys):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "vit.pth"
    torch.save({"state_dict": {"cls_token": torch.zeros(1)}, "x": Payload(marker)}, bad)
    argv = ["--ref", str(pairs_folder / "ref"), "--dist", str(pairs_folder / "dist"), "--crop_size", "32",
            *[a for a in TINY_CLI if a not in ("--pretrained_backbones", "false")]]
    # both backbones from files: offline, a pretrained CNN would stop the run before any weight file is read
    fails(capsys, score_main, [*argv, "--vit_weights", str(bad), "--cnn_weights", str(bad)], f"{bad}: {REFUSAL}")
    from ahiq.models.backbones import build_resnet
    from ahiq.models.weights import backbone_source

    with pytest.raises(UserError, match=REFUSAL.replace("(", r"\(").replace(")", r"\)")):
        build_resnet(backbone_source(TINY.cnn, True, bad), 1, **TINY.cnn_kwargs)  # what --cnn_weights does
    assert not marker.exists()


def test_authors_release_and_old_checkpoints_still_load(small_model, tmp_path):
    heads = {"regressor_model_state_dict": small_model.regressor.state_dict(),
             "deform_net_model_state_dict": small_model.deform_net.state_dict()}
    # The authors' train.py stores loss = np.mean(losses), a numpy float64; written by numpy 1 its pickle
    # names numpy.core.multiarray, by numpy 2 numpy._core.multiarray (legacy format: names are plain bytes).
    authors = tmp_path / "authors.pth"
    torch.save({"epoch": 32, **heads, "optimizer_state_dict": {}, "scheduler_state_dict": {"T_max": 50},
                "loss": np.mean([0.25, 0.5])}, authors, _use_new_zipfile_serialization=False)
    numpy1 = tmp_path / "authors_numpy1.pth"
    numpy1.write_bytes(authors.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    for path in (authors, numpy1):
        deform, regressor, meta = read_checkpoint(path)
        assert meta == {} and all(torch.equal(v, heads["regressor_model_state_dict"][k]) for k, v in regressor.items())
    # ours before this change: the numpy RNG state as numpy arrays
    old = tmp_path / "old_ours.pth"
    torch.save({**checkpoint_dict(small_model), "rng": {0: {"numpy": np.random.get_state()}}}, old)
    assert torch.equal(read_checkpoint(old)[0]["conv1.0.weight"], heads["deform_net_model_state_dict"]["conv1.0.weight"])
    # ours now: tensors and plain values only, readable by plain torch.load(weights_only=True)
    ours = tmp_path / "ours.pth"
    save_checkpoint(ours, small_model, {"score_norm": {"kind": "minmax", "lo": 0.0, "hi": 1.0}}, epoch=1)
    assert torch.load(ours, weights_only=True)["ahiq"]["model_config"]["vit_blocks"] == [1, 3]


def test_folder_as_checkpoint_or_weights_says_folder(pairs_folder, tmp_path, capsys):
    common = ["--ref", str(pairs_folder / "ref"), "--dist", str(pairs_folder / "dist"), "--crop_size", "32", *TINY_CLI]
    fails(capsys, score_main, [*common, "--checkpoint", str(tmp_path)], f"{tmp_path}: is a folder")
    fails(capsys, test_main, ["--ref_dir", str(pairs_folder / "ref"), "--dist_dir", str(pairs_folder / "dist"),
                                     "--checkpoint", str(tmp_path), "--output", str(tmp_path / "r.txt"),
                                     "--crop_size", "32", *TINY_CLI], "is a folder")
    with pytest.raises(UserError, match="is a folder"):
        from ahiq.models.weights import load_weights_file

        load_weights_file(torch.nn.Linear(1, 1), tmp_path)


def test_outputs_are_checked_before_any_model_is_built(pairs_folder, tmp_path, capsys):
    blocked = unwritable_dir(tmp_path)
    common = ["--ref", str(pairs_folder / "ref"), "--dist", str(pairs_folder / "dist"), "--crop_size", "32", *TINY_CLI]
    for flag, value in (("--output", blocked / "scores.csv"), ("--save_maps", blocked / "maps")):
        err = fails(capsys, score_main, [*common, flag, str(value)], flag, "cannot write")
        assert "RANDOM" not in err
    test_common = ["--ref_dir", str(pairs_folder / "ref"), "--dist_dir", str(pairs_folder / "dist"), *TINY_CLI,
                   "--checkpoint", "none", "--crop_size", "32"]
    for flag in ("--output", "--ntire_zip", "--plot", "--save_maps"):
        extra = [] if flag == "--output" else ["--output", str(tmp_path / "r.txt")]
        fails(capsys, test_main, [*test_common, *extra, flag, str(blocked / "x.out")], flag, "cannot write")
    fails(capsys, score_main, [*common, "--output", str(tmp_path)], "is a folder")


def test_same_file_as_ref_and_dist_is_scored(pairs_folder, tmp_path, capsys):
    image = pairs_folder / "ref" / "A0001.bmp"
    out = tmp_path / "self.csv"
    score_main(["--ref", str(image), "--dist", str(image), "--crop_size", "32", "--output", str(out), "--quiet", *TINY_CLI])
    rows = out.read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith(f"{image},{image},") and np.isfinite(float(rows[1].split(",")[2]))


def test_non_finite_weights_and_options_stop(pairs, tmp_path, capsys):
    from ahiq.models.checkpoint import save_checkpoint

    model = tiny_model(2)
    with torch.no_grad():
        model.regressor.conv[0].weight[0, 0] = math.nan
    save_checkpoint(tmp_path / "nan.pth", model)
    refused(capsys, score.main, ["--ref", pairs / "ref", "--dist", pairs / "dist", "--checkpoint", tmp_path / "nan.pth",
                                 *TINY_CLI], "regressor.conv.0.weight holds NaN or Inf")
    for option, value in (("--eta_min", "nan"), ("--grad_clip", "-1"), ("--time_limit", "inf"), ("--max_steps", "-3"),
                          ("--weight_decay", "-1"), ("--seed", "-1"), ("--seed", str(2**32)), ("--batch_size", "10**9")):
        refused(capsys, train.main, [option, value, "--checkpoints_dir", tmp_path], option)


@pytest.mark.parametrize("content, needle", [
    ({"n_epoch": None}, "n_epoch null"), ({"batch_size": None}, "batch_size null"), ({"name": None}, "name null"),
    ({"learning_rate": None}, "learning_rate null"), ({"seed": None}, "seed null"), ({"crop_size": 100}, "multiple of 32"),
    ({"vit_kwargs": {"depth": "deep"}}, "timm cannot build it"), ({"seed": 2**40}, "--seed"),
    ({"eta_min": "nan"}, "--eta_min"), ({"max_steps": -3}, "--max_steps"),
])
def test_option_files_are_checked_like_flags(tmp_path, capsys, content, needle):
    (tmp_path / "c.json").write_text(json.dumps(content))
    refused(capsys, train.main, ["--config", tmp_path / "c.json", "--checkpoints_dir", tmp_path], needle)


@pytest.mark.parametrize("crops", ["random:²", "random:3000000000", "grid:1000003", "grid:0", "five:2"])
def test_crop_protocols_are_checked_when_read(crops, capsys):
    refused(capsys, score.main, ["--ref", "r.png", "--dist", "d.png", "--crops", crops], "--crops")


def test_abbreviations_are_refused_not_half_applied(capsys):
    refused(capsys, score.main, ["--ref", "r.png", "--dist", "d.png", "--crop_s", "32"], "unrecognized", "--crop_s")


def test_checkpoint_metadata_is_typed_and_checked_before_anything_is_built(pairs, tmp_path, capsys, monkeypatch):
    """Every malformed value a checkpoint records is one line, and a checkpoint whose architecture does not take its
    tensors stops before any network is built (on the meta device)."""
    from ahiq.models import checkpoint
    from ahiq.models.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "good.pth", tiny_model(4), {"train": {"crop_size": 32}, "label_range": [1.0, 5.0],
                                                           "score_norm": {"kind": "minmax", "lo": 1.0, "hi": 5.0}})
    good = torch.load(tmp_path / "good.pth", weights_only=True)

    def variant(change) -> Path:
        ckpt = json.loads(json.dumps(good, default=lambda t: None))  # a deep copy of everything but the tensors
        for key in ("deform_net_model_state_dict", "regressor_model_state_dict"):
            ckpt[key] = dict(good[key])
        change(ckpt)
        path = tmp_path / "variant.pth"
        torch.save(ckpt, path)
        return path

    def never(*args, **kwargs):
        raise AssertionError("a network was built")

    monkeypatch.setattr(checkpoint, "build_ahiq", never)
    cases = [
        (lambda c: c["ahiq"]["score_norm"].update(lo=math.nan), "score_norm"),
        (lambda c: c["ahiq"]["score_norm"].update(hi=1.0), "finite lo < hi"),
        (lambda c: c["ahiq"].update(score_norm="minmax"), "score_norm"),
        (lambda c: c["ahiq"].update(label_range=["1", "5"]), "label_range"),
        (lambda c: c["ahiq"].update(label_range=[5.0, math.inf]), "label_range"),
        (lambda c: c["ahiq"].update(split=["train"]), "records split"),
        (lambda c: c.update(ahiq=3), "'ahiq' metadata is a int"),
        (lambda c: c["ahiq"]["backbones"]["vit"].update(seed="abc"), "backbones"),
        (lambda c: c["regressor_model_state_dict"].update({"conv.0.weight": "abc"}), "regressor.conv.0.weight holds a str"),
        (lambda c: c["ahiq"]["model_config"]["vit_kwargs"].update(embed_dim=64), "tensors do not fit"),
    ]
    before = fingerprint(pairs)
    for change, needle in cases:
        path = variant(change)
        refused(capsys, score.main, ["--ref", pairs / "ref", "--dist", pairs / "dist", "--checkpoint", path,
                                     "--device", "cpu"], str(path), needle)
    refused(capsys, test_script.main, ["--ref_dir", pairs / "ref", "--dist_dir", pairs / "dist", "--checkpoint",
                                       variant(cases[0][0]), "--device", "cpu", "--output", tmp_path / "r.txt"],
            "score_norm")
    assert fingerprint(pairs) == before and not (tmp_path / "r.txt").exists()


@pytest.fixture
def released(tmp_path, monkeypatch):
    """A random checkpoint in the authors' format at the documented default path (moved into tmp_path)."""
    from ahiq.models import checkpoint

    model = tiny_model(4)
    path = tmp_path / "checkpoints" / "ahiq_pipal" / "AHIQ_vit_p8_epoch33-da3ea303.pth"
    path.parent.mkdir(parents=True)
    torch.save({"epoch": 32, "regressor_model_state_dict": model.regressor.state_dict(),
                "deform_net_model_state_dict": model.deform_net.state_dict(), "optimizer_state_dict": {},
                "scheduler_state_dict": {}, "loss": 0.0}, path)
    monkeypatch.setattr(checkpoint, "RELEASED_CHECKPOINT", path)
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
