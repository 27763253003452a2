"""Adversarial input and interruptions: no code runs from a checkpoint, exact resume after SIGKILL or a time
limit, unique result names, screening that a bad image cannot pass, outputs checked before work, one-line errors.

Every failure is checked the same way: exit status 2, one line on stderr, no traceback, nothing partial left,
nothing previous lost. The tiny architecture of ``conftest.TINY`` keeps each test at seconds.
"""
from __future__ import annotations

import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from ahiq.commands import score
from ahiq.commands import test as test_script
from ahiq.commands import train
from ahiq.data.images import read_image
from ahiq.models.ahiq import build_ahiq
from ahiq.models.checkpoint import checkpoint_dict, read_checkpoint, save_checkpoint
from tests.conftest import ROOT, TINY_ARGS, random_pair_images
from tests.conftest import TINY as TINY_CONFIG
from ahiq.utils.errors import UserError

TINY = [*TINY_ARGS, "--pretrained_backbones", "false", "--device", "cpu"]
TRAIN = [*TINY, "--dataset", "synthetic", "--synthetic_refs", "4", "--synthetic_size", "32", "--crop_size", "32",
         "--batch_size", "4", "--num_workers", "0", "--seed", "3", "--val_crops", "center", "--progress", "false",
         "--learning_rate", "3e-4"]


def score_main(argv):
    """score.py's main; without a checkpoint in ``argv``, with random heads (``--checkpoint none``)."""
    return score.main(argv if "--checkpoint" in argv else [*argv, "--checkpoint", "none"])


def test_main(argv):
    return test_script.main(argv if "--checkpoint" in argv else [*argv, "--checkpoint", "none"])


test_main.__test__ = False  # a helper, not a test
REFUSAL = "holds Python objects other than tensors; refusing to unpickle it (see README, Security)"


class Payload:
    """Unpickling this creates ``path``: what a malicious checkpoint would do with os.system."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def one_line_error(capsys, exit_info, *expected: str) -> str:
    """The single stderr line of a failed in-process run (exit 2, no traceback), checked for ``expected``."""
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


def fails(capsys, main, argv, *expected: str) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return one_line_error(capsys, exit_info, *expected)


def unwritable_dir(tmp_path: Path) -> Path:
    """A folder that refuses new files: read-only permissions, or a sysfs folder where those do not bind (root)."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    return Path("/sys/kernel") if os.access(folder, os.W_OK) else folder


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_ahiq(TINY_CONFIG, pretrained_backbones=False).eval()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from ahiq.data.synthetic import ensure_synthetic

    return str(ensure_synthetic(tmp_path_factory.mktemp("synthetic"), n_refs=4, size=32, seed=0))


@pytest.fixture(scope="module")
def pairs_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    random_pair_images(folder, [("A0001_00_00.bmp", "A0001.bmp"), ("A0001_01_00.bmp", "A0001.bmp")], 32, 32)
    return folder


def _train(data_root, ckpt_dir, name, *extra):
    return train.main([*TRAIN, "--data_root", data_root, "--checkpoints_dir", str(ckpt_dir), "--name", name, *extra])


def _same_training_state(a: Path, b: Path) -> None:
    """Weights, optimiser moments, scheduler and epoch of two ``last.pth`` files are bit-identical."""
    ca, cb = (torch.load(p, weights_only=True) for p in (a, b))
    for key in ("deform_net_model_state_dict", "regressor_model_state_dict"):
        assert ca[key].keys() == cb[key].keys()
        for name, tensor in ca[key].items():
            assert torch.equal(tensor, cb[key][name]), name
    for sa, sb in zip(ca["optimizer_state_dict"]["state"].values(), cb["optimizer_state_dict"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    assert ca["scheduler_state_dict"] == cb["scheduler_state_dict"]
    assert ca["epoch"] == cb["epoch"] and ca["loss"] == cb["loss"] and ca["best"] == cb["best"]
    assert ca["position"] is None and cb["position"] is None


# ------------------------------------------------------------------------------------------------ 1. safe loading
def _payload_checkpoint(model, path: Path, marker: Path) -> None:
    """A real checkpoint of ours with one extra key holding the payload."""
    torch.save({**checkpoint_dict(model), "extra": Payload(marker)}, path)


def test_payload_checkpoint_is_refused_by_every_script(tiny_model, data_root, pairs_folder, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "evil.pth"
    _payload_checkpoint(tiny_model, bad, marker)
    fails(capsys, score_main, ["--ref", str(pairs_folder / "ref"), "--dist", str(pairs_folder / "dist"),
                               "--checkpoint", str(bad), "--crop_size", "32", *TINY], f"{bad}: {REFUSAL}")
    fails(capsys, test_main, ["--ref_dir", str(pairs_folder / "ref"), "--dist_dir", str(pairs_folder / "dist"),
                                     "--checkpoint", str(bad), "--crop_size", "32", "--output",
                                     str(tmp_path / "r.txt"), *TINY], REFUSAL)
    fails(capsys, train.main, [*TRAIN, "--data_root", data_root, "--checkpoints_dir", str(tmp_path), "--name", "init",
                               "--checkpoint", str(bad)], REFUSAL)
    (tmp_path / "resumed").mkdir()
    _payload_checkpoint(tiny_model, tmp_path / "resumed" / "last.pth", marker)
    fails(capsys, train.main, [*TRAIN, "--data_root", data_root, "--checkpoints_dir", str(tmp_path), "--name",
                               "resumed", "--resume"], f"last.pth: {REFUSAL}")
    assert not marker.exists()  # the payload never ran


def test_backbone_weight_file_with_payload_is_refused(tmp_path, pairs_folder, capsys):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "vit.pth"
    torch.save({"state_dict": {"cls_token": torch.zeros(1)}, "x": Payload(marker)}, bad)
    argv = ["--ref", str(pairs_folder / "ref"), "--dist", str(pairs_folder / "dist"), "--crop_size", "32",
            *[a for a in TINY if a not in ("--pretrained_backbones", "false")]]
    # both backbones from files: offline, a pretrained CNN would stop the run before any weight file is read
    fails(capsys, score_main, [*argv, "--vit_weights", str(bad), "--cnn_weights", str(bad)], f"{bad}: {REFUSAL}")
    from ahiq.models.backbones import build_resnet
    from ahiq.models.weights import backbone_source

    with pytest.raises(UserError, match=REFUSAL.replace("(", r"\(").replace(")", r"\)")):
        build_resnet(backbone_source(TINY_CONFIG.cnn, True, bad), 1, **TINY_CONFIG.cnn_kwargs)  # what --cnn_weights does
    assert not marker.exists()


def test_authors_release_and_old_checkpoints_still_load(tiny_model, tmp_path):
    heads = {"regressor_model_state_dict": tiny_model.regressor.state_dict(),
             "deform_net_model_state_dict": tiny_model.deform_net.state_dict()}
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
    torch.save({**checkpoint_dict(tiny_model), "rng": {0: {"numpy": np.random.get_state()}}}, old)
    assert torch.equal(read_checkpoint(old)[0]["conv1.0.weight"], heads["deform_net_model_state_dict"]["conv1.0.weight"])
    # ours now: tensors and plain values only, readable by plain torch.load(weights_only=True)
    ours = tmp_path / "ours.pth"
    save_checkpoint(ours, tiny_model, {"score_norm": {"kind": "minmax", "lo": 0.0, "hi": 1.0}}, epoch=1)
    assert torch.load(ours, weights_only=True)["ahiq"]["model_config"]["vit_blocks"] == [1, 3]


def test_folder_as_checkpoint_or_weights_says_folder(pairs_folder, tmp_path, capsys):
    common = ["--ref", str(pairs_folder / "ref"), "--dist", str(pairs_folder / "dist"), "--crop_size", "32", *TINY]
    fails(capsys, score_main, [*common, "--checkpoint", str(tmp_path)], f"{tmp_path}: is a folder")
    fails(capsys, test_main, ["--ref_dir", str(pairs_folder / "ref"), "--dist_dir", str(pairs_folder / "dist"),
                                     "--checkpoint", str(tmp_path), "--output", str(tmp_path / "r.txt"),
                                     "--crop_size", "32", *TINY], "is a folder")
    with pytest.raises(UserError, match="is a folder"):
        from ahiq.models.weights import load_weights_file

        load_weights_file(torch.nn.Linear(1, 1), tmp_path)


# ------------------------------------------------------------------------------------------------ 2. exact resume
def test_time_limit_inside_an_epoch_then_resume_is_bit_identical(data_root, tmp_path, monkeypatch, capsys):
    from ahiq.engine.trainer import Trainer

    _train(data_root, tmp_path, "whole", "--n_epoch", "2", "--max_steps", "4")
    calls = {"n": 0}
    real = Trainer.out_of_time

    def stop_at_step_2_of_epoch_1(self, ahead=0.0):  # the time limit "runs out" before the 3rd step of epoch 1
        calls["n"] += 1
        return calls["n"] == 3 and ahead == 0.0

    monkeypatch.setattr(Trainer, "out_of_time", stop_at_step_2_of_epoch_1)
    _train(data_root, tmp_path, "limited", "--n_epoch", "2", "--max_steps", "4", "--time_limit", "60")
    out = capsys.readouterr().out
    assert "time limit of 60s reached inside epoch 1, after step 2 of 4" in out
    saved = torch.load(tmp_path / "limited" / "last.pth", weights_only=True)
    assert saved["position"]["step"] == 2 and saved["epoch"] == -1 and saved["scheduler_state_dict"]["last_epoch"] == 2
    monkeypatch.setattr(Trainer, "out_of_time", real)
    _train(data_root, tmp_path, "limited", "--n_epoch", "2", "--max_steps", "4", "--resume")
    assert "inside epoch 1, after step 2" in capsys.readouterr().out
    _same_training_state(tmp_path / "whole" / "last.pth", tmp_path / "limited" / "last.pth")


def test_time_limit_after_an_epoch_validates_only_what_val_freq_says(data_root, tmp_path, monkeypatch, capsys):
    """A stop between epochs does not add a validation that --val_freq skips: the resumed run ends with the
    same best.pth as an uninterrupted one (and validates the same epochs)."""
    from ahiq.engine.trainer import Trainer

    common = ["--n_epoch", "4", "--max_steps", "2", "--val_freq", "2"]
    _train(data_root, tmp_path, "whole", *common)
    capsys.readouterr()
    real = Trainer.out_of_time
    monkeypatch.setattr(Trainer, "out_of_time", lambda self, ahead=0.0: ahead > 0)  # stop after epoch 1
    _train(data_root, tmp_path, "limited", *common, "--time_limit", "60")
    out = capsys.readouterr().out
    assert "time limit of 60s reached after epoch 1" in out and " val " not in out
    assert not (tmp_path / "limited" / "best.pth").exists()
    monkeypatch.setattr(Trainer, "out_of_time", real)
    _train(data_root, tmp_path, "limited", *common, "--resume")
    _same_training_state(tmp_path / "whole" / "last.pth", tmp_path / "limited" / "last.pth")
    whole, limited = (torch.load(tmp_path / run / "best.pth", weights_only=True) for run in ("whole", "limited"))
    assert whole["epoch"] == limited["epoch"] and whole["metrics"] == limited["metrics"]
    logs = [(tmp_path / run / "train.log").read_text() for run in ("whole", "limited")]
    assert [line.split()[2] for line in logs[0].splitlines() if " val " in line and "epoch" in line] == \
        [line.split()[2] for line in logs[1].splitlines() if " val " in line and "epoch" in line]


def _progress(run: Path) -> int:
    log = run / "train.log"
    return log.read_text().count(" loss=") if log.is_file() else 0


def test_sigkill_at_random_moments_then_resume_is_bit_identical(data_root, tmp_path):
    """Three SIGKILLs at random moments of a short run (one as soon as a checkpoint write is seen, if one is),
    a resume after each; the end equals an uninterrupted run bit for bit and no temporary file remains."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    argv = [sys.executable, "train.py", *TRAIN, "--data_root", data_root, "--checkpoints_dir", str(tmp_path),
            "--n_epoch", "10", "--max_steps", "2"]
    _train(data_root, tmp_path, "whole", "--n_epoch", "10", "--max_steps", "2")  # in this process: one start less
    run = tmp_path / "killed"
    rng = random.Random(11)
    kills = 0
    while kills < 3:
        proc = subprocess.Popen([*argv, "--name", "killed", "--resume"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start, wait = _progress(run), rng.uniform(0.0, 0.4)
        while proc.poll() is None and _progress(run) == start:  # until this run finishes an epoch ...
            time.sleep(0.005)
        deadline = time.monotonic() + wait
        while proc.poll() is None and time.monotonic() < deadline:  # ... then a random moment, or a write
            if kills == 0 and any(p.name.endswith(".tmp") for p in run.iterdir()):
                break
        if proc.poll() is not None:
            break  # the run finished before the kill: nothing left to interrupt
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        for path in (run / "last.pth", run / "best.pth"):  # whatever a kill leaves behind loads
            if path.exists():
                read_checkpoint(path)
    assert kills == 3, f"the run ended after {kills} kills; make it longer"
    subprocess.run([*argv, "--name", "killed", "--resume"], cwd=ROOT, env=env, check=True, capture_output=True,
                   timeout=600)
    _same_training_state(tmp_path / "whole" / "last.pth", run / "last.pth")
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_stale_temporary_files_are_removed_at_start(data_root, tmp_path, capsys):
    run = tmp_path / "stale"
    run.mkdir()
    ours = [run / ".last.pth.k3j9x_2a.tmp", run / ".best.pth.abcdefgh.tmp"]
    for p in ours:
        p.write_bytes(b"half a checkpoint")
    others = [run / "notes.tmp", run / ".last.pth.tmp", tmp_path / ".last.pth.abcdefgh.tmp"]  # not ours / not here
    for p in others:
        p.write_bytes(b"keep")
    _train(data_root, tmp_path, "stale", "--n_epoch", "1", "--max_steps", "1")
    assert "removed 2 temporary file(s) of interrupted writes" in capsys.readouterr().out
    assert not any(p.exists() for p in ours) and all(p.exists() for p in others)


def test_full_disk_keeps_the_previous_checkpoints(data_root, tmp_path, capsys):
    _train(data_root, tmp_path, "full", "--n_epoch", "1", "--max_steps", "1")
    run = tmp_path / "full"
    before = {p.name: p.read_bytes() for p in (run / "last.pth", run / "best.pth")}
    capsys.readouterr()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))  # a disk that takes 200 kB more per file
    try:
        with pytest.raises(SystemExit) as exit_info:
            _train(data_root, tmp_path, "full", "--n_epoch", "2", "--max_steps", "1", "--resume")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()  # the notes on random backbones, then the one error line
    errors = [line for line in err.splitlines() if not line.startswith("note: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith(f"error: {run}/") and ".pth: cannot write (file too large)" in errors[0]
    assert {p.name: p.read_bytes() for p in (run / "last.pth", run / "best.pth")} == before
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("damage", ["truncated", "foreign", "text"])
def test_damaged_last_pth_at_resume_is_one_line(data_root, tmp_path, capsys, damage):
    _train(data_root, tmp_path, "run", "--n_epoch", "1", "--max_steps", "1")
    last = tmp_path / "run" / "last.pth"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, last)
    else:
        last.write_text("not a checkpoint")
    capsys.readouterr()
    fails(capsys, train.main, [*TRAIN, "--data_root", data_root, "--checkpoints_dir", str(tmp_path), "--name", "run",
                               "--n_epoch", "2", "--resume"], f"{last}: ")


def test_last_pth_written_before_this_change_resumes(data_root, tmp_path):
    """A last.pth of ours from before: the numpy RNG state as numpy's tuple with a uint32 array, no position."""
    _train(data_root, tmp_path, "old", "--n_epoch", "1", "--max_steps", "1")
    last = tmp_path / "old" / "last.pth"
    ckpt = torch.load(last, weights_only=True)
    np.random.seed(5)
    ckpt["rng"][0]["numpy"] = np.random.get_state()
    del ckpt["position"]
    torch.save(ckpt, last)
    _train(data_root, tmp_path, "old", "--n_epoch", "2", "--max_steps", "1", "--resume")
    resumed = torch.load(last, weights_only=True)  # written anew: plain values only
    assert resumed["epoch"] == 1 and isinstance(resumed["rng"][0]["numpy"]["state"]["key"], list)


def test_unwritable_run_folder_stops_before_any_work(data_root, tmp_path, capsys):
    fails(capsys, train.main, [*TRAIN, "--data_root", data_root, "--checkpoints_dir", str(unwritable_dir(tmp_path)),
                               "--name", "run"], "cannot write")


# ------------------------------------------------------------------------------------------------ 3. unique names
def test_live_results_and_maps_are_named_uniquely(tmp_path, monkeypatch, capsys):
    from tests.conftest import shared_path
    from tests.fixtures_standard import build_live

    shared_path("data", "labels", "LIVE")
    root = build_live(tmp_path / "LIVE")
    written = []

    def fake_map(image, score_map, weight_map, path, title="", name=""):  # matplotlib for 779 maps takes minutes
        written.append(name)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(name)

    monkeypatch.setattr("ahiq.engine.session.save_quality_map", fake_map)
    out, maps = tmp_path / "results.txt", tmp_path / "maps"
    test_main(["--dataset", "live", "--data_root", str(root), "--split", "all", "--checkpoint", "none",
                      "--crop_size", "32", "--crops", "center", "--batch_size", "64", "--output", str(out),
                      "--save_maps", str(maps), *TINY])
    names = [line.split(",")[0] for line in out.read_text().splitlines()]
    assert len(names) == 779 and len(set(names)) == 779 and "jpeg/img1.bmp" in names and "wn/img1.bmp" in names
    labels = (tmp_path / "results_labels.csv").read_text().splitlines()[1:]
    assert [line.split(",")[0] for line in labels] == names
    files = sorted(maps.rglob("*.png"))
    assert len(files) == 779 and sorted(written) == sorted(names)
    assert (maps / "jpeg" / "img1.png").read_text() == "jpeg/img1.bmp"


def test_unique_names_keep_bare_names_where_they_are_unique():
    from ahiq.data.records import result_names
    from ahiq.utils.io import map_file_names as unique_file_names

    assert result_names([Path("/d/Train_Dis/A0001_00_00.bmp"), Path("/d/Train_Dis/A0002_00_00.bmp")]) == \
        ["A0001_00_00.bmp", "A0002_00_00.bmp"]
    assert result_names([Path("/L/jpeg/img1.bmp"), Path("/L/wn/img1.bmp"), Path("/L/wn/img2.bmp")]) == \
        ["jpeg/img1.bmp", "wn/img1.bmp", "wn/img2.bmp"]
    assert unique_file_names(["a.bmp", "b.bmp"], ".png") == ["a.png", "b.png"]
    assert unique_file_names(["a.bmp", "a.png"], ".png") == ["a.bmp.png", "a.png.png"]
    assert unique_file_names(["jpeg/img1.bmp", "wn/img1.bmp"], ".png") == ["jpeg/img1.png", "wn/img1.png"]
    # never out of the maps folder: absolute paths lose their root, .. becomes __
    assert unique_file_names(["/data/x/a.png", "../up/b.png"], ".png") == ["data/x/a.png", "__/up/b.png"]


# ------------------------------------------------------------------------------------------------ 4. screening
def _write_truncated_png(path: Path, size: int = 32) -> None:
    ok, data = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8))
    path.write_bytes(data.tobytes()[: len(data) // 2])  # header intact, body cut


def test_screening_finds_what_scoring_could_not_read(tmp_path, capsys):
    """A truncated PNG is skipped with --skip_bad; an EXIF-rotated JPEG is read as viewers show it and pairs
    with a reference of its displayed size; the good pairs are scored and written."""
    ref, dist = tmp_path / "ref", tmp_path / "dist"
    random_pair_images(tmp_path, [("A0001_00_00.png", "A0001.png")], 64, 32)  # stored 32 wide, 64 tall
    _write_truncated_png(dist / "A0001_01_00.png")
    stored = np.ascontiguousarray(np.rot90(cv2.imread(str(ref / "A0001.png")), 1))  # 64 wide, 32 tall
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": the viewer shows 32 wide, 64 tall
    Image.fromarray(stored[:, :, ::-1]).save(dist / "A0001_02_00.jpg", quality=95, exif=exif)
    assert read_image(dist / "A0001_02_00.jpg").shape == (64, 32, 3)
    out = tmp_path / "scores.csv"
    argv = ["--ref", str(ref), "--dist", str(dist), "--crop_size", "32", "--output", str(out), "--quiet", *TINY]
    with pytest.raises(SystemExit) as exit_info:
        score_main(argv)
    assert exit_info.value.code == 2 and "A0001_01_00.png: cannot decode image" in capsys.readouterr().err
    assert not out.exists()
    score_main([*argv, "--skip_bad"])
    err = capsys.readouterr().err
    assert "skipped: " in err and "A0001_01_00.png" in err and "scored 2 pair(s)" in err
    rows = out.read_text().splitlines()
    assert len(rows) == 3 and rows[1].startswith(str(dist / "A0001_00_00.png")) and "A0001_02_00.jpg" in rows[2]


def test_16_bit_images_keep_their_depth_and_alpha_is_announced_once(tmp_path, capsys):
    ref, dist = tmp_path / "ref", tmp_path / "dist"
    random_pair_images(tmp_path, [("A0001_00_00.png", "A0001.png")], 32, 32)
    twelve_bit = (np.arange(32 * 32 * 3).reshape(32, 32, 3) * 4 % 4096).astype(np.uint16)  # 12-bit data
    cv2.imwrite(str(dist / "A0001_01_00.png"), twelve_bit)
    image = read_image(dist / "A0001_01_00.png")
    assert image.dtype == np.float32 and np.allclose(image.max(), 4092 / 65535) and len(np.unique(image)) > 256
    bgra = np.dstack([cv2.imread(str(ref / "A0001.png")), np.full((32, 32), 128, np.uint8)])
    for k in (2, 3):
        cv2.imwrite(str(dist / f"A0001_0{k}_00.png"), bgra)
    assert np.array_equal(read_image(dist / "A0001_02_00.png"), read_image(ref / "A0001.png"))  # RGB as stored
    score_main(["--ref", str(ref), "--dist", str(dist), "--crop_size", "32", "--quiet", *TINY])
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "warning: 2 image(s) have an alpha channel" in err and "scored 4 pair(s)" in err


# ------------------------------------------------------------------------------------------------ 5. outputs
def test_outputs_are_checked_before_any_model_is_built(pairs_folder, tmp_path, capsys):
    blocked = unwritable_dir(tmp_path)
    common = ["--ref", str(pairs_folder / "ref"), "--dist", str(pairs_folder / "dist"), "--crop_size", "32", *TINY]
    for flag, value in (("--output", blocked / "scores.csv"), ("--save_maps", blocked / "maps")):
        err = fails(capsys, score_main, [*common, flag, str(value)], flag, "cannot write")
        assert "RANDOM" not in err
    test_common = ["--ref_dir", str(pairs_folder / "ref"), "--dist_dir", str(pairs_folder / "dist"), *TINY,
                   "--checkpoint", "none", "--crop_size", "32"]
    for flag in ("--output", "--ntire_zip", "--plot", "--save_maps"):
        extra = [] if flag == "--output" else ["--output", str(tmp_path / "r.txt")]
        fails(capsys, test_main, [*test_common, *extra, flag, str(blocked / "x.out")], flag, "cannot write")
    fails(capsys, score_main, [*common, "--output", str(tmp_path)], "is a folder")


def test_written_files_follow_the_umask(pairs_folder, data_root, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "scores.csv"
        score_main(["--ref", str(pairs_folder / "ref"), "--dist", str(pairs_folder / "dist"), "--crop_size", "32",
                    "--output", str(out), "--quiet", *TINY])
        _train(data_root, tmp_path, "modes", "--n_epoch", "1", "--max_steps", "1")
    finally:
        os.umask(old)
    for path in (out, tmp_path / "modes" / "last.pth", tmp_path / "modes" / "opt.json"):
        assert path.stat().st_mode & 0o777 == 0o644, path


# ------------------------------------------------------------------------------------------------ 6. messages
def test_same_file_as_ref_and_dist_is_scored(pairs_folder, tmp_path, capsys):
    image = pairs_folder / "ref" / "A0001.bmp"
    out = tmp_path / "self.csv"
    score_main(["--ref", str(image), "--dist", str(image), "--crop_size", "32", "--output", str(out), "--quiet", *TINY])
    rows = out.read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith(f"{image},{image},") and np.isfinite(float(rows[1].split(",")[2]))


def test_duplicate_label_across_files_names_image_and_both_files(tmp_path):
    from ahiq.data.pipal import load_pipal_train

    (tmp_path / "Train_Ref").mkdir()
    (tmp_path / "Train_Dis").mkdir()
    labels = tmp_path / "Train_Label"
    labels.mkdir()
    (labels / "A0001.txt").write_text("A0001_00_00.bmp,1500\nA0001_00_01.bmp,1400\n")
    (labels / "A0002.txt").write_text("A0002_00_00.bmp,1500\nA0001_00_01.bmp,1300\n")
    with pytest.raises(UserError) as err:
        load_pipal_train(tmp_path)
    assert str(err.value) == (f"{labels / 'A0002.txt'}:2: A0001_00_01.bmp is labelled again (first at "
                              f"{labels / 'A0001.txt'}:2); delete one of the lines")


def test_csiq_dst_type_ignores_case_and_spaces(tmp_path):
    from ahiq.data.standard import load_csiq
    from tests.fixtures_standard import build_csiq, csiq_rows

    rows = [r for r in csiq_rows() if r[2] in ("jpeg2000", "noise")][:4]
    spelled = [(r[0], r[1], "jpeg 2000" if r[2] == "jpeg2000" else "Noise", *r[3:]) for r in rows]
    pairs = load_csiq(build_csiq(tmp_path / "CSIQ", spelled, images=False))
    assert sorted(p.dist.parent.name for p in pairs) == sorted("jpeg2000" if r[2] == "jpeg2000" else "awgn"
                                                             for r in rows)
