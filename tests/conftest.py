"""Shared test setup: repo root on sys.path, offline hub, tiny random-weight models.

Most tests use :data:`TINY`: the default timm names (ViT-B/8 tag, ResNet-50 tag) made small through
``ModelConfig.vit_kwargs/cnn_kwargs`` (a narrow 4-block ViT with patch 8 read at blocks 1 and 3, a ResNet-50
with one narrow bottleneck per stage) and a narrow head and fusion (``head_kwargs/fusion_kwargs``), so every
test runs the real code path in milliseconds. The default
architecture itself is built on the meta device (shapes and tensor names, no weights) in ``test_models.py``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# The tests test this clone, whatever else is installed: its root first on the path here and in every process the
# tests start (`import ahiq` finds ROOT/ahiq, which maps the clone's floors).
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
import ahiq  # noqa: E402

if Path(ahiq.__file__).resolve().parent != ROOT / "ahiq":  # pragma: no cover
    raise RuntimeError(f"`import ahiq` found {ahiq.__file__}, not this clone's {ROOT / 'ahiq'}")
from ahiq.utils.io import shared_folder  # noqa: E402

# The team's shared folder (spec, real label files, mini datasets): $AHIQ_SHARED, else ../shared.
SHARED = shared_folder()
SHARED_HINT = "set AHIQ_SHARED to the shared folder (default: ../shared beside the project)"
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download; hub look-ups fail fast
# The released checkpoint's user cache: a folder of the tests' own, never the user's (models.checkpoint.released_checkpoint).
os.environ["AHIQ_HOME"] = tempfile.mkdtemp(prefix="ahiq-tests-home-")
# Tiny models: one thread is as fast as two here and does not slow down on a shared, busy machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")  # for the scripts tests start as processes, too
torch.set_num_threads(1)

from ahiq.models.ahiq import ModelConfig  # noqa: E402
from ahiq.models.weights import file_sha256  # noqa: E402

TINY = ModelConfig(vit_blocks=(1, 3), vit_kwargs={"embed_dim": 32, "depth": 4, "num_heads": 2},
                   cnn_kwargs={"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "stem_width": 16},
                   head_kwargs={"channels": 16, "hidden": 32, "smoothed": 24}, fusion_kwargs={"hidden": 24})
# The same architecture as command-line flags of train.py / test.py / score.py ...
TINY_ARGS = ["--vit_blocks", ",".join(map(str, TINY.vit_blocks)),
             *(a for key in ("vit_kwargs", "cnn_kwargs", "head_kwargs", "fusion_kwargs")
               for a in (f"--{key}", json.dumps(getattr(TINY, key))))]
# ... and with random backbones on the CPU at crop size 32: what most script tests run.
TINY_CLI = [*TINY_ARGS, "--pretrained_backbones", "false", "--device", "cpu", "--crop_size", "32"]
NO_HEADS = ["--checkpoint", "none"]
# A short training run of train.py on the generated set of :func:`data_root`.
TRAIN = [*TINY_CLI, "--dataset", "synthetic", "--synthetic_refs", "4", "--synthetic_size", "32", "--batch_size", "4",
         "--num_workers", "0", "--seed", "3", "--val_crops", "center", "--progress", "false", "--learning_rate", "3e-4"]


def shared_path(*parts: str) -> Path:
    """A path under the shared folder, or skip the test when the project is cloned alone."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present; {SHARED_HINT}")
    return path


def tiny_model(seed: int = 0, config: ModelConfig = TINY):
    """A :data:`TINY` AHIQ network with seeded random backbones and spread-out random heads, in eval mode."""
    from ahiq.models.ahiq import build_ahiq

    torch.manual_seed(seed)
    model = build_ahiq(config, pretrained_backbones=False)
    randomise_heads(model)
    return model.eval()


@pytest.fixture(scope="session")
def small_model():
    """The :data:`TINY` architecture with seeded random weights (heads whose scores spread)."""
    return tiny_model()


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """``synthetic_root(n_refs, size)``: the folder of the generated set that ``--dataset synthetic
    --synthetic_refs N --synthetic_size S`` reads (split seed 0), written once per session; runs only read it."""
    from ahiq.data.synthetic import ensure_synthetic

    made: dict[tuple[int, int], str] = {}

    def root(n_refs: int = 4, size: int = 32) -> str:
        if (n_refs, size) not in made:
            folder = tmp_path_factory.mktemp(f"synthetic_{n_refs}_{size}")
            made[n_refs, size] = str(ensure_synthetic(folder, n_refs=n_refs, size=size, seed=0))
        return made[n_refs, size]

    return root


@pytest.fixture(scope="session")
def data_root(synthetic_root):
    """The generated set of ``--synthetic_refs 4 --synthetic_size 32``."""
    return synthetic_root(4, 32)


@pytest.fixture(scope="session")
def kadid_tree(tmp_path_factory):
    """KADID-10k in its mixed layout, built from the shared folder's mini set (skipped without it)."""
    from tests.fixtures_baselines import build_kadid_mixed

    return build_kadid_mixed(tmp_path_factory.mktemp("kadid"), shared_path("data", "mini", "KADID-10k-mini"))


def randomise_heads(model) -> None:
    """Seeded normal weights of variance 3 / fan_in and small biases (0.1): PyTorch's default init makes
    near-constant scores; with these the tiny model's scores spread over ~0.2 between pairs, while bf16
    autocast stays within ~0.005 of fp32 (large random biases would make the head cancel large numbers)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in list(model.deform_net.named_parameters()) + list(model.regressor.named_parameters()):
            scale = (3.0 / p[0].numel()) ** 0.5 if p.dim() > 1 else 0.1
            p.copy_(torch.randn(p.shape, generator=gen) * scale * (0.3 if "offset" in name else 1.0))


def random_pair_images(folder: Path, names: list[tuple[str, str]], height: int, width: int, seed: int = 0) -> None:
    """Write reference/distorted BMPs named as given (``(dist_name, ref_name)``), noise of growing strength."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    (folder / "ref").mkdir(parents=True, exist_ok=True)
    (folder / "dist").mkdir(parents=True, exist_ok=True)
    refs = {}
    for k, (dist_name, ref_name) in enumerate(names):
        if ref_name not in refs:
            base = cv2.GaussianBlur(rng.random((height, width, 3)).astype(np.float32), (0, 0), 3) * 255
            refs[ref_name] = np.clip(base * 2 - 128, 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / "ref" / ref_name), refs[ref_name])
        noisy = refs[ref_name] + rng.normal(0, 5 + 10 * k, refs[ref_name].shape)
        cv2.imwrite(str(folder / "dist" / dist_name), np.clip(noisy, 0, 255).astype(np.uint8))


@pytest.fixture(scope="session")
def authors_files(tmp_path_factory):
    """An authors'-format checkpoint (``ahiq.pth``, no metadata: the architecture comes from
    :data:`TINY_ARGS`) and backbone weight files (``vit.safetensors``, ``cnn.pth``) holding seeded random
    weights of the :data:`TINY` backbones, and the AHIQ model they make."""
    import timm

    from ahiq.models.ahiq import build_ahiq
    from tests.weight_files import save_state_dict

    folder = tmp_path_factory.mktemp("authors")
    torch.manual_seed(21)
    save_state_dict(timm.create_model("vit_base_patch8_224", pretrained=False, **TINY.vit_kwargs),
                    folder / "vit.safetensors")
    save_state_dict(timm.create_model("resnet50", pretrained=False, **TINY.cnn_kwargs), folder / "cnn.pth")
    model = build_ahiq(TINY, pretrained_backbones=True, vit_weights=str(folder / "vit.safetensors"),
                       cnn_weights=str(folder / "cnn.pth"))
    randomise_heads(model)
    torch.save({"epoch": 32, "regressor_model_state_dict": model.regressor.state_dict(),
                "deform_net_model_state_dict": model.deform_net.state_dict(), "optimizer_state_dict": {},
                "scheduler_state_dict": {}, "loss": 0.0}, folder / "ahiq.pth")
    return folder, model.eval()


def run_main(main, argv: list[str], capsys) -> SimpleNamespace:
    """Call a script's ``main(argv)`` in this process, like running it: ``returncode`` (0, or the code it
    exits with), ``stdout``, ``stderr``, and ``value`` (what main returned)."""
    capsys.readouterr()
    value, code = None, 0
    try:
        value = main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err, value=value)


def train_run(data_root: str, checkpoints_dir, name: str, *extra):
    """train.py's main on :data:`TRAIN`, in this process."""
    from ahiq.commands import train

    return train.main([*TRAIN, "--data_root", data_root, "--checkpoints_dir", str(checkpoints_dir), "--name", name,
                       *extra])


def score_main(argv):
    """score.py's main; without a checkpoint in ``argv``, with random heads (``--checkpoint none``)."""
    from ahiq.commands import score

    return score.main(argv if "--checkpoint" in argv else [*argv, *NO_HEADS])


def test_main(argv):
    """test.py's main; without a checkpoint in ``argv``, with random heads (``--checkpoint none``)."""
    from ahiq.commands import test

    return test.main(argv if "--checkpoint" in argv else [*argv, *NO_HEADS])


test_main.__test__ = False  # a helper, not a test


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (links by target) with the SHA-256 of its bytes: what no refused run may change."""
    return {str(p.relative_to(folder)): ("link:" + os.readlink(p)) if p.is_symlink() else
            file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink()}


def refused(capsys, main, argv, *expected) -> str:
    """A run of ``main(argv)`` refused: exit 2, no traceback, its last stderr line an error naming ``expected``."""
    proc = run_main(main, argv, capsys)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) >= 1 and "Traceback" not in proc.stderr, proc.stderr
    line = err[-1]
    assert line.startswith("error: ") and all(e in line for e in expected), line
    return line


def fails(capsys, main, argv, *expected: str) -> str:
    """A run of ``main(argv)`` refused with exit 2 and a single stderr line (no traceback) naming ``expected``."""
    proc = run_main(main, argv, capsys)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert all(text in err for text in expected), err
    return err


def unwritable_dir(tmp_path: Path) -> Path:
    """A folder that refuses new files: read-only permissions, or a sysfs folder where those do not bind (root)."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    return Path("/sys/kernel") if os.access(folder, os.W_OK) else folder


@pytest.fixture
def pairs(tmp_path):
    """PNG pairs (so that maps could land on them) and a labels.csv over them, in ``tmp_path / data``."""
    names = [("A0001_00_00.png", "A0001.png"), ("A0001_01_00.png", "A0001.png"), ("A0002_00_00.png", "A0002.png")]
    root = tmp_path / "data"
    random_pair_images(root, names, 32, 32)
    rows = [f"dist/{d},ref/{r},{3.0 + k}" for k, (d, r) in enumerate(names)]
    (root / "labels.csv").write_text("dist,ref,score\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="session")
def pairs_folder(tmp_path_factory):
    """Two BMP pairs of one 32x32 reference, for runs that only read them."""
    folder = tmp_path_factory.mktemp("pairs")
    random_pair_images(folder, [("A0001_00_00.bmp", "A0001.bmp"), ("A0001_01_00.bmp", "A0001.bmp")], 32, 32)
    return folder


def pytest_runtest_logreport(report) -> None:
    """With ``AHIQ_SKIPPED_SHARED`` set to a file, list there each test skipped for want of the shared folder
    (CI runs the suite without it, then only those tests with it)."""
    listing = os.environ.get("AHIQ_SKIPPED_SHARED")
    if listing and report.skipped and SHARED_HINT in str(report.longrepr) and not os.environ.get("PYTEST_XDIST_WORKER"):
        with open(listing, "a") as fh:
            fh.write(report.nodeid + "\n")


def clone_files() -> set[str] | None:
    """The clone's untracked and ignored paths (Python's caches left out), or None outside a git work tree."""
    try:
        proc = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return {line[3:] for line in proc.stdout.splitlines() if line[:2] in ("??", "!!")
            and not {"__pycache__", ".pytest_cache"} & set(Path(line[3:]).parts)}


def pytest_sessionstart(session) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # the controller: before any worker starts, after all have ended
        session.config.ahiq_clone_files = clone_files()


def pytest_sessionfinish(session, exitstatus) -> None:
    """No test writes inside the clone: a session that left a file there fails, naming it."""
    before = getattr(session.config, "ahiq_clone_files", None)
    after = clone_files() if before is not None else None
    if after is not None and after - before:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"error: the tests wrote inside the clone {ROOT}: {', '.join(sorted(after - before))}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
