"""export.py: the ONNX scoring graph (onnxruntime, without torch, gives score.py's scores) and pyiqa's checkpoint
format (pyiqa's own network gives our scores). ONNX tests use the tiny model; the pyiqa tests need the authors'
architecture (pyiqa builds nothing else), so they build it with random weights, and run where pyiqa is installed."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from ahiq.commands import export as export_script
from ahiq.commands import score as score_script
from ahiq.data.crops import crop_positions
from ahiq.data.images import as_unit_float, read_image
from ahiq.models.checkpoint import read_checkpoint, save_checkpoint
from tests.conftest import ROOT, random_pair_images, randomise_heads, run_main, shared_path, tiny_model

SCORE_ONNX = ROOT / "examples" / "score_onnx.py"
CROP = 64  # the tiny checkpoint's training crop, which export.py and score.py take as their default


def _score_onnx_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("score_onnx", SCORE_ONNX)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.pth"
    save_checkpoint(path, tiny_model(0), extra_meta={"train": {"crop_size": CROP}})  # as train.py writes it
    return path


@pytest.fixture(scope="module")
def onnx_file(tiny_checkpoint):
    """The tiny checkpoint exported by export.py (its checked line as printed)."""
    pytest.importorskip("onnxscript", reason="ONNX export needs onnx and onnxscript (requirements-dev.txt)")
    pytest.importorskip("onnxruntime", reason="ONNX scoring needs onnxruntime (requirements-dev.txt)")
    path = tiny_checkpoint.parent / "tiny.onnx"
    export_script.main(["--checkpoint", str(tiny_checkpoint), "--to", "onnx", "--output", str(path)])
    return path


def _score_py(checkpoint: Path, ref: Path, dist: Path, out: Path, capsys, *extra: str) -> dict[str, float]:
    proc = run_main(score_script.main, ["--checkpoint", checkpoint, "--ref", ref, "--dist", dist, "--device", "cpu",
                                        "--output", out, "--quiet", *extra], capsys)
    assert proc.returncode == 0, proc.stderr
    return {Path(r["dist"]).name: float(r["score"]) for r in csv.DictReader(out.open())}


def test_onnx_scores_equal_score_py_without_torch(onnx_file, tiny_checkpoint, tmp_path, capsys):
    names = [(f"A0001_0{k}_00.bmp", "A0001.bmp") for k in range(3)]
    random_pair_images(tmp_path, names, 80, 96)
    ref, dists = tmp_path / "ref" / "A0001.bmp", [tmp_path / "dist" / d for d, _ in names]
    ours = _score_py(tiny_checkpoint, ref, tmp_path / "dist", tmp_path / "s.csv", capsys, "--crops", "five")
    # A process of its own, as a user runs it; batches of 2 and 1 pairs (10 and 5 crops): the batch is dynamic.
    code = ("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "assert 'torch' not in sys.modules, 'score_onnx.py imported torch'")
    proc = subprocess.run([sys.executable, "-c", code, SCORE_ONNX, "--model", onnx_file, "--ref", ref, "--dist", *dists,
                           "--crops", "five", "--batch_size", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    theirs = {Path(line.split()[0]).name: float(line.split()[-1]) for line in proc.stdout.splitlines()[1:]}
    assert theirs.keys() == ours.keys() and len(set(ours.values())) == 3
    assert max(abs(theirs[k] - ours[k]) for k in ours) < 1e-4, (theirs, ours)


def test_onnx_scores_equal_score_py_on_real_pairs(onnx_file, tiny_checkpoint, tmp_path, capsys):
    images = shared_path("data", "mini", "KADID-10k-mini", "images")
    ref, dists = images / "I01.png", sorted(images.glob("I01_*.png"))
    crops = ["--crops", "random:3", "--seed", "7"]
    ours = _score_py(tiny_checkpoint, ref, images, tmp_path / "s.csv", capsys, *crops)
    theirs = dict((Path(name).name, score) for name, score in _score_onnx_module().main(
        ["--model", str(onnx_file), "--ref", str(ref), "--dist", *map(str, dists), *crops]))
    assert theirs.keys() == ours.keys() and len(ours) == 4
    assert max(abs(theirs[k] - ours[k]) for k in ours) < 1e-4, (theirs, ours)


def test_opencv_reader_decodes_as_read_image(tmp_path):
    """score_onnx.py's reader (no torch) against data.images.read_image: an EXIF-rotated JPEG, 16-bit, grey, alpha."""
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated: 24 wide, 40 tall
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", quality=95, exif=exif)
    cv2.imwrite(str(tmp_path / "deep.png"), rng.integers(0, 65536, (24, 40, 3), dtype=np.uint16))
    cv2.imwrite(str(tmp_path / "grey.png"), stored[..., 0])
    cv2.imwrite(str(tmp_path / "alpha.png"), np.dstack([stored, stored[..., :1]]))
    read_rgb = _score_onnx_module().read_rgb
    for name in ("rotated.jpg", "deep.png", "grey.png", "alpha.png"):
        ours, expected = read_rgb(tmp_path / name), as_unit_float(read_image(tmp_path / name))
        assert ours.shape == expected.shape and np.array_equal(ours, expected), name
    assert read_rgb(tmp_path / "rotated.jpg").shape == (40, 24, 3)


def test_one_line_errors(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    def run(main, *argv):
        proc = run_main(main, list(argv), capsys)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
        return proc.stderr

    base = ["--checkpoint", tiny_checkpoint, "--to", "onnx", "--output"]
    assert "is the --checkpoint file" in run(export_script.main, *base, f"{tiny_checkpoint.parent}/./tiny.pth")
    assert "multiple of 32" in run(export_script.main, *base, tmp_path / "x.onnx", "--crop_size", "100")
    err = run(export_script.main, "--checkpoint", tiny_checkpoint, "--to", "pyiqa", "--output", tmp_path / "x.pth")
    assert "authors' architecture only" in err and "vit_blocks=[1, 3]" in err and not (tmp_path / "x.pth").exists()
    from huggingface_hub import constants

    authors = tmp_path / "authors.pth"  # no architecture recorded: the refusal below comes before any model is built
    torch.save({"deform_net_model_state_dict": {"w": torch.zeros(1)}, "regressor_model_state_dict": {"w": torch.zeros(1)}},
               authors)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "my_hub"))
    assert "is your Hugging Face hub cache" in run(export_script.main, "--checkpoint", authors, "--to", "pyiqa",
                                                   "--output", tmp_path / "x.pth", "--hub_cache", tmp_path / "my_hub")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    assert "pip install onnx onnxscript" in run(export_script.main, *base, tmp_path / "x.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    score_onnx = _score_onnx_module().main
    assert "needs onnxruntime" in run(score_onnx, "--model", "m.onnx", "--ref", "r.png", "--dist", "d.png")


# ------------------------------------------------------------------------------------------------------ pyiqa
@pytest.fixture(scope="module")
def pyiqa_pair(tmp_path_factory):
    """(our model, pyiqa's metric) of one checkpoint of the authors' architecture (seeded random backbones and
    heads), through `export.py --to pyiqa --hub_cache`, with pyiqa offline on that hub cache."""
    pyiqa = pytest.importorskip("pyiqa", reason="pyiqa is not installed (optional: pip install pyiqa)")
    from huggingface_hub import constants

    from ahiq.models.ahiq import build_ahiq
    from ahiq.models.export import pyiqa_metric_options

    folder = tmp_path_factory.mktemp("pyiqa")
    model = build_ahiq(pretrained_backbones=False, seed=3)
    randomise_heads(model)
    save_checkpoint(folder / "ours.pth", model.eval())
    export_script.main(["--checkpoint", str(folder / "ours.pth"), "--to", "pyiqa", "--output", str(folder / "pyiqa.pth"),
                        "--hub_cache", str(folder / "hub")])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_CACHE", str(folder / "hub"))  # what HF_HUB_CACHE=DIR sets at import
        metric = pyiqa.create_metric("ahiq", pretrained_model_path=str(folder / "pyiqa.pth"), device="cpu", num_crop=1,
                                     **pyiqa_metric_options(model.config))
    # Our loader reads the pyiqa file too: the same heads and the same record of the backbones.
    deform, regressor, meta = read_checkpoint(folder / "pyiqa.pth")
    assert all(torch.equal(v, model.regressor.state_dict()[k]) for k, v in regressor.items()) and len(deform) == 8
    assert json.dumps(meta["backbones"]) == json.dumps({k: s.to_dict() for k, s in model.backbone_sources.items()})
    return model, metric


@pytest.mark.parametrize("images", ["generated", "kadid"])
def test_pyiqa_scores_equal_ours(pyiqa_pair, images, tmp_path):
    model, metric = pyiqa_pair
    if images == "kadid":
        folder = shared_path("data", "mini", "KADID-10k-mini", "images")
        ref, dist = read_image(folder / "I01.png"), read_image(folder / "I01_01_05.png")
    else:
        random_pair_images(tmp_path, [("A0001_00_00.bmp", "A0001.bmp")], 240, 256)
        ref, dist = read_image(tmp_path / "ref" / "A0001.bmp"), read_image(tmp_path / "dist" / "A0001_00_00.bmp")
    (top, left), = crop_positions("center", *ref.shape[:2], 224)
    dist_t, ref_t = (torch.from_numpy(as_unit_float(x)[top:top + 224, left:left + 224]).permute(2, 0, 1)[None]
                     for x in (dist, ref))
    with torch.no_grad():
        ours, theirs = model(dist_t, ref_t), metric(dist_t, ref_t)
    assert theirs.shape == (1, 1) and abs(ours.item() - theirs.item()) < 1e-5, (ours, theirs)
