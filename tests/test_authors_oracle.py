"""Our scores against the authors' own code: an optional, independent oracle for the central claim.

The other correctness tests compare with ``benchmarks/authors_pattern.py``, our restatement of the authors'
computation, which shares the heads' modules with the model under test. This one imports the authors'
``deform_fusion`` and ``Pixel_Prediction`` (``model/deform_regressor.py``), their feature extraction
(``script/extract_feature.py``, fed by their forward hooks ``SaveOutput`` of ``utils/util.py`` on whole timm
backbones) and their crop positions (``five_point_crop`` of ``utils/process_image.py``) from a clone of their
repository named by ``AHIQ_AUTHORS_CODE``; nothing of theirs is in ours::

    git clone https://github.com/IIGROUP/AHIQ ../AHIQ
    AHIQ_AUTHORS_CODE=../AHIQ python3 -m pytest -q tests/test_authors_oracle.py

Both sides get the same heads through one file in the authors' checkpoint format (their modules make it,
our ``load_model`` reads it) and the same seeded random backbones (the whole timm models they hook are built
from the sources our model records). Inputs are real crops of KADID-10k's I01 and its distorted versions,
prepared for their side as their dataset class does (OpenCV, RGB, ``(x / 255 - 0.5) / 0.5``) and for ours by
our own reader. Default architecture (ViT-B/8, ResNet-50): their classes hard-code its widths. Seven crop pairs
in all, about 10 s each on one CPU thread (their side runs the whole ViT-B/8 twice per crop, as their loop does).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

from tests.conftest import randomise_heads, shared_path

AUTHORS_ENV = "AHIQ_AUTHORS_CODE"
AUTHORS_REPO = "https://github.com/IIGROUP/AHIQ"
AUTHORS_FILES = ("model/deform_regressor.py", "script/extract_feature.py", "utils/util.py", "utils/process_image.py")


def _authors_folder() -> Path:
    value = os.environ.get(AUTHORS_ENV, "").strip()
    if not value:
        pytest.skip(f"{AUTHORS_ENV} is not set: to compare our scores with the authors' own code, clone "
                    f"{AUTHORS_REPO} and set {AUTHORS_ENV} to that folder", allow_module_level=True)
    folder = Path(value).expanduser()
    missing = [name for name in AUTHORS_FILES if not (folder / name).is_file()]
    if missing:
        pytest.skip(f"{AUTHORS_ENV}={value} lacks {', '.join(missing)}: set it to a clone of {AUTHORS_REPO}",
                    allow_module_level=True)
    return folder


AUTHORS = _authors_folder()

SEED = 5  # our random backbones, redrawn from it by load_model (and for their whole backbones from the same record)
CROP = 224
# Agreement within 1e-5 at scores of magnitude ~1, in fp32 on both sides. The two compute the same function in
# a different order of float operations: our offsets come from the 28x28 ViT map through per-phase kernels where
# theirs convolve its nearest-upsampled 56x56 copy; our deformable convolution is bilinear sampling + one GEMM
# where theirs is torchvision's im2col kernel (spec §7: 2e-5 apart on fusion outputs of magnitude ~5); our ViT
# map comes from timm's forward_intermediates, not hooks, with both images of a pair in one batch. Observed:
# below 5e-7 (4 float32 ulps at these scores); the rest leaves room for other CPUs' summation orders. Measured
# when our side was broken on purpose: (dy, dx) swapped in our deformable conv 1.5e-2, ViT blocks 2-6 instead
# of 1-5 1.2, ImageNet normalisation 0.69, one weight of the score conv +1e-3 3e-3, one deformable-conv weight
# +1e-2 7e-5. (One of the 7 M weights of the head's first 3x3 conv +1e-3, 5 % of its size, moves scores by
# 6e-6..1e-5: about the tolerance.) The scores of different crops spread over more than 100x the tolerance
# (checked below), so a computation that ignored its input could not pass either.
TOLERANCE = 1e-5


def _import_file(path: Path, name: str) -> ModuleType:
    """Import one of the authors' files as a stand-alone module (their top-level package names, ``utils``,
    ``model``, ``data``, clash with ours, so nothing of theirs goes on sys.path)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def authors() -> SimpleNamespace:
    """The authors' modules: ``regressor`` (deform_regressor), ``features`` (extract_feature), ``util``, ``crops``."""
    names = ("regressor", "features", "util", "crops")
    return SimpleNamespace(**{name: _import_file(AUTHORS / file, f"ahiq_authors_{name}")
                              for name, file in zip(names, AUTHORS_FILES)})


class AuthorsScorer:
    """The authors' test-time computation, with their modules and the hooks as their ``init_saveoutput`` sets
    them; :meth:`score` is the body of their crop loop (``eval_epoch`` in train.py, ``test`` in test.py)."""

    def __init__(self, authors: SimpleNamespace, checkpoint: Path, vit: torch.nn.Module, resnet: torch.nn.Module):
        from timm.models.resnet import Bottleneck  # the classes their train.py/test.py hook, still there in timm 1.0
        from timm.models.vision_transformer import Block

        self.authors = authors
        self.opt = SimpleNamespace(patch_size=8, crop_size=CROP)  # the fields of their options these functions read
        # Their create_model calls .cuda() on every module; the modules themselves run on the CPU unchanged.
        self.deform_net = authors.regressor.deform_fusion(self.opt)
        self.regressor = authors.regressor.Pixel_Prediction()
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)  # as their load_model reads it
        self.regressor.load_state_dict(state["regressor_model_state_dict"])
        self.deform_net.load_state_dict(state["deform_net_model_state_dict"])
        self.vit, self.resnet50 = vit.eval(), resnet.eval()
        self.save_output = authors.util.SaveOutput()
        for layer in self.resnet50.modules():
            if isinstance(layer, Bottleneck):
                layer.register_forward_hook(self.save_output)
        for layer in self.vit.modules():
            if isinstance(layer, Block):
                layer.register_forward_hook(self.save_output)

    @torch.no_grad()
    def score(self, d_img: torch.Tensor, r_img: torch.Tensor) -> torch.Tensor:
        """Normalised crops ``(B, 3, 224, 224)`` -> their prediction ``(B, 1)``."""
        get_vit_feature, get_resnet_feature = self.authors.features.get_vit_feature, self.authors.features.get_resnet_feature
        self.vit(d_img)
        vit_dis = get_vit_feature(self.save_output)
        self.save_output.outputs.clear()
        self.vit(r_img)
        vit_ref = get_vit_feature(self.save_output)
        self.save_output.outputs.clear()
        b, n, c = vit_ref.shape
        h = w = CROP // self.opt.patch_size
        assert h * w == n
        vit_ref = vit_ref.transpose(1, 2).view(b, c, h, w)
        vit_dis = vit_dis.transpose(1, 2).view(b, c, h, w)
        self.resnet50(d_img)
        cnn_dis = get_resnet_feature(self.save_output)
        self.save_output.outputs.clear()
        cnn_dis = self.deform_net(cnn_dis, vit_ref)
        self.resnet50(r_img)
        cnn_ref = get_resnet_feature(self.save_output)
        self.save_output.outputs.clear()
        cnn_ref = self.deform_net(cnn_ref, vit_ref)
        return self.regressor(vit_dis, vit_ref, cnn_dis, cnn_ref)


@pytest.fixture(scope="module")
def models(authors, tmp_path_factory) -> SimpleNamespace:
    """``ours`` (our AHIQ from :func:`models.checkpoint.load_model`) and ``theirs`` (:class:`AuthorsScorer`),
    sharing heads through one authors'-format checkpoint and seeded random backbones."""
    from ahiq.models.weights import create_backbone
    from ahiq.models.checkpoint import load_model

    # Their modules make the heads (seeded, spread-out weights, as the other tests use) and save them the
    # way their save_model does; our loader has to read their tensor names strictly.
    torch.manual_seed(0)
    heads = SimpleNamespace(deform_net=authors.regressor.deform_fusion(SimpleNamespace(patch_size=8)),
                            regressor=authors.regressor.Pixel_Prediction())
    randomise_heads(heads)
    checkpoint = tmp_path_factory.mktemp("authors_oracle") / "epoch_1.pth"
    torch.save({"epoch": 0, "regressor_model_state_dict": heads.regressor.state_dict(),
                "deform_net_model_state_dict": heads.deform_net.state_dict(), "optimizer_state_dict": {},
                "scheduler_state_dict": {}, "loss": 0.0}, checkpoint)
    ours = load_model(checkpoint, pretrained_backbones=False, seed=SEED)
    # Whole timm models (all 12 blocks and the head, all 4 ResNet stages, as their code runs them) with the
    # weights our model records: the same seeded initialisation of the same timm names.
    sources = ours.backbone_sources
    theirs = AuthorsScorer(authors, checkpoint, create_backbone(sources["vit"]), create_backbone(sources["cnn"]))
    return SimpleNamespace(ours=ours, theirs=theirs)


@pytest.fixture(scope="module")
def kadid() -> Path:
    """The mini KADID-10k images folder (skips, before anything is built, when the shared folder is absent)."""
    return shared_path("data", "mini", "KADID-10k-mini", "images")


def _authors_input(path: Path) -> torch.Tensor:
    """An image as their ``PIPAL.__getitem__`` + ``ToTensor`` prepare it: ``(1, 3, H, W)`` float32 in [-1, 1]."""
    import cv2
    import numpy as np

    img = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    img = (np.array(img).astype("float32") / 255 - 0.5) / 0.5
    return torch.from_numpy(np.transpose(img, (2, 0, 1))).type(torch.FloatTensor)[None]


def _our_input(path: Path) -> torch.Tensor:
    """An image as our reader gives it: ``(1, 3, H, W)`` uint8 (the model normalises)."""
    from ahiq.data.images import read_image

    return torch.from_numpy(read_image(path)).permute(2, 0, 1)[None]


def _window(img: torch.Tensor, top: int, left: int) -> torch.Tensor:
    return img[:, :, top:top + CROP, left:left + CROP]


def test_crop_scores_match_the_authors_code(kadid, models):
    # Two distortions (KADID-10k types 1 and 15 at level 5) at off-grid crop positions, one batch as their loop runs.
    ref, *dists = (kadid / name for name in ("I01.png", "I01_01_05.png", "I01_15_05.png"))
    positions = [(37, 101), (160, 277)]
    theirs = models.theirs.score(
        torch.cat([_window(_authors_input(d), *p) for d, p in zip(dists, positions)]),
        torch.cat([_window(_authors_input(ref), *p) for p in positions]))
    with torch.no_grad():
        ours = models.ours(torch.cat([_window(_our_input(d), *p) for d, p in zip(dists, positions)]),
                           torch.cat([_window(_our_input(ref), *p) for p in positions]))
    theirs = theirs.squeeze(1)
    diff = (ours - theirs).abs().max().item()
    print(f"per-crop scores: ours {ours.tolist()} theirs {theirs.tolist()} max abs difference {diff:.2e}")
    assert ours.shape == theirs.shape == (2,)
    assert diff < TOLERANCE, f"our crop scores {ours.tolist()} differ from the authors' {theirs.tolist()} by {diff:.2e}"
    # Scores that barely move would let a wrong computation pass: they differ between the crops by far more.
    assert (theirs[0] - theirs[1]).abs().item() > 100 * TOLERANCE


def test_five_crop_protocol_matches_the_authors_code(kadid, models, authors):
    from ahiq.data.crops import crop_positions

    ref, dist = kadid / "I01.png", kadid / "I01_06_05.png"
    r_img_org, d_img_org = _authors_input(ref), _authors_input(dist)
    height, width = r_img_org.shape[-2:]
    # Their five_point_crop on a map of pixel coordinates says where each window starts: our positions must agree.
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    coords = torch.stack((rows, cols))[None]
    their_positions = []
    for i in range(5):
        window, _ = authors.crops.five_point_crop(i, d_img=coords, r_img=coords, config=models.theirs.opt)
        assert window.shape[-2:] == (CROP, CROP)
        their_positions.append((int(window[0, 0, 0, 0]), int(window[0, 1, 0, 0])))
    positions = crop_positions("five", int(height), int(width), CROP)
    assert positions == their_positions

    # Their validation loop: pred += regressor(...) crop by crop, then pred /= num_avg_val.
    pred, per_crop = 0, []
    for i in range(5):
        d_img, r_img = authors.crops.five_point_crop(i, d_img=d_img_org, r_img=r_img_org, config=models.theirs.opt)
        crop_pred = models.theirs.score(d_img, r_img)
        per_crop.append(crop_pred.item())
        pred += crop_pred
    pred /= 5
    d, r = _our_input(dist), _our_input(ref)
    with torch.no_grad():
        ours = models.ours(torch.cat([_window(d, *p) for p in positions]), torch.cat([_window(r, *p) for p in positions]))
    theirs = torch.tensor(per_crop)
    diff = (ours - theirs).abs().max().item()
    mean_diff = abs(ours.mean().item() - pred.item())
    print(f"five crops: ours {ours.tolist()} theirs {per_crop}; mean ours {ours.mean().item():.7f} theirs "
          f"{pred.item():.7f}; max abs difference per crop {diff:.2e}, of the mean {mean_diff:.2e}")
    assert diff < TOLERANCE, f"our five crop scores {ours.tolist()} differ from the authors' {per_crop} by {diff:.2e}"
    assert mean_diff < TOLERANCE, f"our five-crop score {ours.mean().item()} differs from theirs {pred.item()}"
    assert (theirs.max() - theirs.min()).item() > 100 * TOLERANCE
