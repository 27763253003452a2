"""AHIQ as a library: the package (one import name, the wheel), ``ahiq.create_metric`` on every input kind,
``ahiq.score``, torch.hub, the released checkpoint's user cache, and the ``ahiq`` command."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import ahiq
from ahiq.commands import score as score_script
from ahiq.models.checkpoint import save_checkpoint
from ahiq.utils.errors import UserError
from tests.conftest import ROOT, random_pair_images, run_main, tiny_model

HEAVY = ("torch", "torchvision", "timm", "cv2", "scipy", "matplotlib")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A checkpoint of ours (tiny network, random backbones it records, crop 32) and a 250x190 pair beside a
    64x48 one."""
    folder = tmp_path_factory.mktemp("package")
    save_checkpoint(folder / "ck.pth", tiny_model(3), {"train": {"crop_size": 32}})
    random_pair_images(folder / "small", [("A0001_00_00.png", "A0001.png")], 48, 64)
    random_pair_images(folder / "large", [("I01_01_05.png", "I01.png")], 190, 250, seed=1)
    return folder


def score_py(files: Path, which: str, capsys, *extra: str) -> float:
    out = files / f"{which}{'_'.join(extra)}.csv"
    run = run_main(score_script.main, ["--ref", files / which / "ref", "--dist", files / which / "dist", "--checkpoint",
                                       files / "ck.pth", "--output", out, "--quiet", *extra], capsys)
    assert run.returncode == 0, run.stderr
    return float(out.read_text().splitlines()[1].rsplit(",", 1)[1])


def test_every_input_kind_gives_score_py_score(files, capsys):
    from PIL import Image

    from ahiq.data.images import read_image

    expected = score_py(files, "small", capsys)
    metric = ahiq.create_metric(files / "ck.pth", device="cpu")
    assert isinstance(metric, torch.nn.Module) and metric.lower_better is False and metric.score_range == "~0, ~1"
    dist_path, ref_path = files / "small" / "dist" / "A0001_00_00.png", files / "small" / "ref" / "A0001.png"
    d8, r8 = read_image(dist_path), read_image(ref_path)
    tensor = lambda a: torch.from_numpy(a).permute(2, 0, 1).float() / 255  # noqa: E731
    kinds = {
        "str paths": (str(dist_path), str(ref_path)),
        "Path objects": (dist_path, ref_path),
        "PIL images": (Image.open(dist_path), Image.open(ref_path)),
        "uint8 arrays": (d8, r8),
        "float arrays": (d8.astype(np.float32) / 255, r8.astype(np.float32) / 255),
        "CHW tensors": (tensor(d8), tensor(r8)),
        "BCHW tensors": (tensor(d8)[None], tensor(r8)[None]),
        "lists": ([dist_path], [r8]),
    }
    for kind, (dist, ref) in kinds.items():
        scores = metric(dist, ref)
        assert scores.shape == (1,), kind
        assert float(scores[0]) == pytest.approx(expected, abs=1e-6), kind
    batch = metric([dist_path, tensor(d8)], ref_path)  # one reference for two distorted images
    assert torch.allclose(batch, torch.full((2,), expected), atol=1e-6)
    assert ahiq.score(dist_path, ref_path, checkpoint=files / "ck.pth", device="cpu") == pytest.approx(expected, abs=1e-6)


def test_any_size_and_maps(files, capsys):
    expected = score_py(files, "large", capsys, "--crops", "five")
    metric = ahiq.create_metric(files / "ck.pth", crops="five", device="cpu")
    dist, ref = files / "large" / "dist" / "I01_01_05.png", files / "large" / "ref" / "I01.png"
    scores, score_maps, weight_maps = metric(dist, ref, return_maps=True)
    assert float(scores[0]) == pytest.approx(expected, abs=1e-6)
    assert score_maps[0].shape == weight_maps[0].shape == (190, 250)
    assert np.isnan(score_maps[0]).any() and np.isfinite(score_maps[0][:32, :32]).all()  # the corners only


def test_wrong_input_is_one_clear_value_error(files):
    metric = ahiq.create_metric(files / "ck.pth", device="cpu")
    ref = torch.rand(3, 48, 64)
    cases = {
        "grey image of another size": (np.zeros((40, 40), np.uint8), ref, "dist\\[0\\] is 40x40 but ref\\[0\\] is 64x48"),
        "4-channel tensor": (torch.rand(1, 4, 48, 64), ref, "dist is a tensor of shape \\(1, 4, 48, 64\\)"),
        "values in 0..255": (torch.rand(3, 48, 64) * 255, ref, "values from 0.* to 2.*divide 8-bit values by 255"),
        "smaller than the crop": (torch.rand(3, 16, 64), torch.rand(3, 16, 64), "smaller than the 32x32 crop"),
        "channels first array": (np.zeros((3, 48, 64), np.uint8), ref, "channels first"),
        "a dict": ({"a": 1}, ref, "dist is a dict: give a file path"),
        "a missing file": ("missing.png", ref, "dist: missing.png"),
        "a folder": (files / "small" / "dist", ref, "dist is a folder"),
    }
    for case, (dist, ref_, pattern) in cases.items():
        with pytest.raises(ValueError, match=pattern):
            metric(dist, ref_)
            pytest.fail(f"{case}: no error")
    with pytest.raises(TypeError, match="unknown option"):
        ahiq.create_metric(files / "ck.pth", crop=32)


def test_as_loss_gives_gradients_to_dist(files):
    loss = ahiq.create_metric(files / "ck.pth", as_loss=True, device="cpu")
    metric = ahiq.create_metric(files / "ck.pth", device="cpu")
    dist = torch.rand(2, 3, 48, 64, requires_grad=True)
    ref = torch.rand(2, 3, 48, 64)
    value = loss(dist, ref)
    value.backward()
    assert dist.grad is not None and dist.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())
    assert float(value.detach()) == pytest.approx(1 - float(metric(dist.detach(), ref).mean()), abs=1e-5)


def test_torch_hub_local_gives_the_same_score(files):
    expected = float(ahiq.create_metric(files / "ck.pth", device="cpu")(*_pair(files)))
    metric = torch.hub.load(str(ROOT), "ahiq", source="local", checkpoint=files / "ck.pth", device="cpu")
    assert float(metric(*_pair(files))) == pytest.approx(expected, abs=1e-7)


def _pair(files: Path) -> tuple[Path, Path]:
    return files / "small" / "dist" / "A0001_00_00.png", files / "small" / "ref" / "A0001.png"


def test_released_checkpoint_downloads_once_into_the_cache_with_its_hash_checked(files, tmp_path, monkeypatch):
    from ahiq.models import checkpoint

    data = (files / "ck.pth").read_bytes()
    prefix = hashlib.sha256(data).hexdigest()[:8]
    source = tmp_path / "server"
    source.mkdir()
    (source / f"AHIQ_test-{prefix}.pth").write_bytes(data)
    (source / "AHIQ_test-00000000.pth").write_bytes(data)  # a name whose hash prefix the file does not have
    cache = tmp_path / "cache"
    monkeypatch.setenv("AHIQ_HOME", str(cache))
    monkeypatch.setattr(checkpoint, "RELEASED_CHECKPOINT", tmp_path / "clone" / "none.pth")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    good = (source / f"AHIQ_test-{prefix}.pth").as_uri()
    path = checkpoint.released_checkpoint(good, progress=False)
    assert path == cache / f"AHIQ_test-{prefix}.pth" and path.read_bytes() == data
    (source / f"AHIQ_test-{prefix}.pth").unlink()
    assert checkpoint.released_checkpoint(good, progress=False) == path  # the cached copy: nothing fetched again
    with pytest.raises(UserError, match="SHA-256 does not start with 00000000"):
        checkpoint.released_checkpoint((source / "AHIQ_test-00000000.pth").as_uri(), progress=False)
    assert sorted(p.name for p in cache.iterdir()) == [path.name]  # nothing of the bad download left behind
    monkeypatch.setenv("AHIQ_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        checkpoint.released_checkpoint("https://example.invalid/x/AHIQ_other-12345678.pth", progress=False)
    message = str(err.value)
    for way in ("AHIQ_other-12345678.pth", "https://example.invalid/x/AHIQ_other-12345678.pth", str(cache),
                "checkpoint=PATH", "checkpoint=none pretrained_backbones=false"):
        assert way in message, way
    assert "\n" not in message


def test_requirements_and_pyproject_agree():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def lines(name: str) -> list[str]:
        text = (ROOT / name).read_text().splitlines()
        return [line.split("#")[0].strip() for line in text if line.split("#")[0].strip() and not line.startswith("-r")]

    assert project["dependencies"] == lines("requirements.txt")
    assert project["optional-dependencies"]["dev"] == lines("requirements-dev.txt")
    assert set(project["optional-dependencies"]["onnx"]) <= set(lines("requirements-dev.txt"))


def test_commands_answer_before_torch_is_imported():
    code = ("import sys, json\nfrom ahiq.__main__ import main\ncodes = []\n"
            "for argv in json.loads(sys.argv[1]):\n"
            "    try:\n        main(argv)\n        codes.append(0)\n"
            "    except SystemExit as stop:\n        codes.append(stop.code)\n"
            "print(json.dumps([codes, sorted(m for m in " + repr(HEAVY) + " if m in sys.modules)]))\n")
    argvs = [["--help"], ["--version"], ["score", "--help"], ["test", "--help"], ["train", "--help"],
             ["export", "--help"], ["score", "--ref", "a", "--dist", "b", "--crop_s", "32"],
             ["score", "--ref", "a", "--dist", "b", "--crops", "six"],
             ["train", "--n_epoch", "0"], ["nothing"]]
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(argvs)], capture_output=True, text=True, timeout=120)
    codes, heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert codes == [0, 0, 0, 0, 0, 0, 2, 2, 2, 2] and heavy == [], (codes, heavy, proc.stderr[-2000:])
    assert "error: unrecognized arguments: --crop_s 32 (see ahiq score --help)" in proc.stderr
    assert "error: --crops six: unknown crop protocol" in proc.stderr
    assert "unknown task 'nothing'" in proc.stderr


def test_help_puts_the_task_first_and_ends_with_examples(capsys):
    from ahiq.__main__ import main

    for task, first in (("score", "--ref REF"), ("test", "--split"), ("train", "--dataset"), ("export", "--checkpoint")):
        with pytest.raises(SystemExit):
            main([task, "--help"])
        text = capsys.readouterr().out
        assert text.startswith(f"usage: ahiq {task}") and "examples:\n  ahiq " + task in text, task
        options = text.split("\n\n", 2)[2]
        assert options.index(first) < options.index("--vit_kwargs" if task != "export" else "--seed"), task
    with pytest.raises(SystemExit):
        score_script.main(["--help"])
    assert "architecture (a checkpoint records its own" in capsys.readouterr().out


def _tracked_copy(dest: Path) -> Path:
    """The clone's files as a fresh checkout has them (git's list when there is one), outside the clone."""
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
        names = [n.decode() for n in names if n]
    except (OSError, subprocess.CalledProcessError):
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]
    for name in names:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.mark.slow
def test_the_wheel_is_one_import_name_and_scores_like_score_py(files, tmp_path, capsys):
    pytest.importorskip("wheel", reason="building the wheel offline needs the wheel package (requirements-dev.txt)")
    source = _tracked_copy(tmp_path / "source")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    [wheel] = (tmp_path / "dist").glob("ahiq-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"ahiq", f"ahiq-{ahiq.__version__}.dist-info"}
    assert "ahiq/options/presets/ntire2022.json" in names and "ahiq/models/ahiq.py" in names
    assert not [n for n in names if "/tests/" in n or "/benchmarks/" in n or "/experiments/" in n]
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    assert sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info")) == ["ahiq", "bin"]
    env = {**os.environ, "PYTHONPATH": str(target)}  # this installed copy, not the clone
    where = tmp_path / "elsewhere"
    where.mkdir()
    found = subprocess.run([sys.executable, "-c", "import ahiq; print(ahiq.__file__, ahiq.__path__)"], cwd=where, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert found.startswith(str(target / "ahiq")) and str(ROOT) not in found
    score_py(files, "small", capsys)
    expected = (files / "small.csv").read_text()
    out = where / "scores.csv"
    run = subprocess.run([str(target / "bin" / "ahiq"), "score", "--ref", str(files / "small" / "ref"), "--dist",
                          str(files / "small" / "dist"), "--checkpoint", str(files / "ck.pth"), "--output", str(out),
                          "--quiet"], cwd=where, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert out.read_text() == expected
    # the installed library on every input kind, from that folder
    code = ("import json, sys, numpy as np, torch, ahiq\nfrom PIL import Image\n"
            "d, r, ck = sys.argv[1:4]\nm = ahiq.create_metric(ck, device='cpu')\n"
            "t = lambda p: torch.from_numpy(np.asarray(Image.open(p).convert('RGB')).copy()).permute(2, 0, 1) / 255.0\n"
            "kinds = [(d, r), (Image.open(d), Image.open(r)), (np.asarray(Image.open(d)), np.asarray(Image.open(r))),"
            " (t(d), t(r)), (t(d)[None], [r])]\n"
            "print(json.dumps([float(m(a, b)[0]) for a, b in kinds] + [ahiq.score(d, r, checkpoint=ck, device='cpu')]))")
    listed = subprocess.run([sys.executable, "-c", code, *map(str, _pair(files)), str(files / "ck.pth")], cwd=where, env=env,
                            capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]
    scores = json.loads(listed.stdout.strip().splitlines()[-1])
    assert np.allclose(scores, float(expected.splitlines()[1].rsplit(",", 1)[1]), atol=1e-6, rtol=0), scores


def test_notes_go_to_the_ahiq_logger_not_to_print(files, capsys):
    import logging

    log = logging.getLogger("ahiq")
    records: list[logging.LogRecord] = []
    catcher = logging.Handler()
    catcher.emit = records.append
    log.addHandler(catcher)
    capsys.readouterr()
    try:
        ahiq.create_metric(files / "ck.pth", device="cpu")
        shown = capsys.readouterr().err  # the default handler: the same bare lines as the scripts print
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            ahiq.create_metric(files / "ck.pth", device="cpu")
        finally:
            log.setLevel(level)
        silenced = capsys.readouterr().err
    finally:
        log.removeHandler(catcher)
    random = [r.getMessage() for r in records if "RANDOM weights" in r.getMessage()]
    assert len(random) == 2 and all(r.levelno == logging.WARNING for r in records)
    assert [line for line in shown.splitlines() if "RANDOM weights" in line] == random
    assert "note:" not in silenced
