"""Inputs read one way everywhere: one pairing rule for score.py, test.py and the loaders (an ambiguity, or names
that differ only in case or Unicode normalisation, is one error naming both); images decoded as viewers show
them, orientation applied once for every format, from any file name, within a pixel budget checked from the
header; and the checks left for when options and files are read. Each refused run leaves the inputs byte for
byte as they were."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
import unicodedata
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from ahiq.commands import score
from ahiq.commands import test as test_script
from ahiq.commands import train
from ahiq.data.images import read_image
from ahiq.utils.tables import read_csv
from tests.conftest import NO_HEADS, ROOT, TINY_CLI, fingerprint, random_pair_images, refused, run_main, score_main


def scored(capsys, argv) -> list[list[str]]:
    """The rows of score.py's ``--output`` (``argv`` holds it) after a run that must succeed."""
    proc = run_main(score.main, [*argv, *TINY_CLI, *NO_HEADS, "--quiet"], capsys)
    assert proc.returncode == 0, proc.stderr
    return read_csv(argv[argv.index("--output") + 1])[1:]


def rows_of_test(capsys, ref, dist, out) -> list[list[str]]:
    proc = run_main(test_script.main, ["--ref_dir", ref, "--dist_dir", dist, "--output", out, "--crops", "center",
                                       *TINY_CLI, *NO_HEADS], capsys)
    assert proc.returncode == 0, proc.stderr
    return read_csv(out)


# --- one pairing rule -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("refs, dist, named", [
    (["I01.bmp", "I01.png"], "I01_01_01.png", ["I01.bmp", "I01.png"]),       # two formats of one reference
    (["img.png", "img_1.png"], "img_1.png", ["img.png", "img_1.png"]),     # its own name beside the naming rule's
    (["Img.png", "img.png"], "img_03.png", ["Img.png", "img.png"]),        # names that differ only in case
])
def test_an_ambiguous_reference_is_one_error_in_score_and_test(tmp_path, capsys, refs, dist, named):
    random_pair_images(tmp_path, [(dist, refs[0])], 32, 32)
    for extra in refs[1:]:
        shutil.copy(tmp_path / "ref" / refs[0], tmp_path / "ref" / extra)
    before = fingerprint(tmp_path)
    ref_dir, dist_dir = tmp_path / "ref", tmp_path / "dist"
    line = refused(capsys, score.main, ["--ref", ref_dir, "--dist", dist_dir, "--output", tmp_path / "s.csv",
                                        *TINY_CLI, *NO_HEADS], *named)
    line2 = refused(capsys, test_script.main, ["--ref_dir", ref_dir, "--dist_dir", dist_dir, "--output",
                                               tmp_path / "t.txt", *TINY_CLI, *NO_HEADS], *named)
    assert line == line2  # one rule, one message
    assert fingerprint(tmp_path) == before


def test_score_and_test_pair_two_folders_alike(tmp_path, capsys):
    """Identical names and the datasets' naming rule pair the same way in score.py and test.py, and score alike."""
    random_pair_images(tmp_path, [("a.png", "a.png"), ("A0001_00_00.png", "A0001.png"),
                                  ("i03_11_5.png", "I03.png")], 32, 32)
    rows = scored(capsys, ["--ref", tmp_path / "ref", "--dist", tmp_path / "dist", "--output", tmp_path / "s.csv",
                           "--crops", "center"])
    pairs = {Path(d).name: (Path(r).name, float(s)) for d, r, s in rows}
    assert {d: r for d, (r, _) in pairs.items()} == {"a.png": "a.png", "A0001_00_00.png": "A0001.png",
                                                    "i03_11_5.png": "I03.png"}
    results = dict(rows_of_test(capsys, tmp_path / "ref", tmp_path / "dist", tmp_path / "t.txt"))
    assert {name: round(float(s), 5) for name, s in results.items()} == {
        name: round(s, 5) for name, (_, s) in pairs.items()}


def test_names_no_file_system_tells_apart_are_one_error(tmp_path, capsys):
    """Two distorted files that differ only in case: one error naming both in test.py (it wrote two identical
    rows for one of them) and in the PIPAL/synthetic loader (one took the other's label)."""
    random_pair_images(tmp_path, [("A0001_00_00.png", "A0001.png"), ("a0001_00_00.png", "A0001.png")], 32, 32)
    root = tmp_path / "pipal"
    shutil.copytree(tmp_path / "ref", root / "Train_Ref")
    shutil.copytree(tmp_path / "dist", root / "Train_Dis")
    (root / "Train_Label").mkdir()
    (root / "Train_Label" / "A0001.txt").write_text("A0001_00_00.png,1500\n")  # which file is that?
    before = fingerprint(tmp_path)
    refused(capsys, test_script.main, ["--ref_dir", tmp_path / "ref", "--dist_dir", tmp_path / "dist", "--output",
                                       tmp_path / "t.txt", *TINY_CLI, *NO_HEADS], "'A0001_00_00.png'", "'a0001_00_00.png'")
    refused(capsys, score.main, ["--ref", tmp_path / "ref", "--dist", tmp_path / "dist", *TINY_CLI, *NO_HEADS],
            "differ only in case")
    from ahiq.data.pipal import load_pipal_train
    from ahiq.utils.errors import UserError

    with pytest.raises(UserError, match="'A0001_00_00.png' and 'a0001_00_00.png' are names that differ only in case"):
        load_pipal_train(root)  # it gave one file's label to the other
    assert fingerprint(tmp_path) == before


def test_unicode_normalisation_is_named(tmp_path, capsys):
    """é composed (NFC, as typed) and decomposed (NFD, as macOS writes it) print alike: the messages say which."""
    nfc, nfd = unicodedata.normalize("NFC", "café_01.png"), unicodedata.normalize("NFD", "café_01.png")
    random_pair_images(tmp_path, [(nfd, "café.png")], 32, 32)
    (tmp_path / "labels.csv").write_text(f"dist,ref,score\ndist/{nfc},ref/café.png,3\n")
    proc = run_main(test_script.main, ["--dataset", "csv", "--data_root", tmp_path, "--split", "all", "--output",
                                       tmp_path / "t.txt", *TINY_CLI, *NO_HEADS], capsys)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{nfc}: image not found; {tmp_path / 'dist'} holds {nfd!r}, a name that differs only in Unicode " \
           "normalisation (one composed (NFC), the other decomposed (NFD)): rename the file or the name that lists " \
           "it" in proc.stderr, proc.stderr
    shutil.copy(tmp_path / "dist" / nfd, tmp_path / "dist" / nfc)
    line = refused(capsys, score.main, ["--ref", tmp_path / "ref", "--dist", tmp_path / "dist", *TINY_CLI, *NO_HEADS],
                   "Unicode normalisation")
    assert "composed (NFC)" in line and "decomposed (NFD)" in line


# --- images as viewers show them --------------------------------------------------------------------------------

def write_tiff(path: Path, img: np.ndarray, orientation: int) -> None:
    """An uncompressed RGB TIFF (8- or 16-bit) with the orientation tag in its first directory, as cameras and
    scanners write it (OpenCV turns such a file itself, whatever IMREAD_IGNORE_ORIENTATION says)."""
    h, w, _ = img.shape
    bits = img.dtype.itemsize * 8
    data = img.astype(img.dtype.newbyteorder("<")).tobytes()
    entries = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, None), (259, 3, 1, 1), (262, 3, 1, 2), (273, 4, 1, None),
               (274, 3, 1, orientation), (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1)]
    bps_at = 8 + 2 + len(entries) * 12 + 4
    out = bytearray(b"II*\x00" + struct.pack("<IH", 8, len(entries)))
    for tag, kind, count, value in entries:
        value = bps_at if tag == 258 else bps_at + 6 if tag == 273 else value
        out += struct.pack("<HHIHH" if kind == 3 and tag != 258 else "<HHII", tag, kind, count, value,
                           *((0,) if kind == 3 and tag != 258 else ()))
    path.write_bytes(bytes(out + struct.pack("<I3H", 0, bits, bits, bits) + data))


def picture(h: int = 24, w: int = 40) -> np.ndarray:
    """Blocks of colour (no two alike), so that every flip and turn changes the pixels, and JPEG keeps them."""
    rng = np.random.default_rng(3)
    return cv2.resize(rng.integers(0, 256, (6, 10, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_every_orientation_is_applied_once_as_pil_shows_it(tmp_path, fmt):
    from ahiq.data.images import read_header, read_image

    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.{fmt.lower()}"
        Image.fromarray(picture()).save(path, fmt, exif=exif, **{"JPEG": {"quality": 100}, "WEBP": {"lossless": True}}
                                        .get(fmt, {}))
        shown = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB")).astype(int)
        got = read_image(path)
        assert got.shape == shown.shape and np.abs(got.astype(int) - shown).max() <= 2, (fmt, orientation)
        assert (read_header(path).height, read_header(path).width) == shown.shape[:2]


@pytest.mark.parametrize("depth", [np.uint8, np.uint16])
def test_tiff_orientation_in_its_directory_is_applied_once(tmp_path, depth):
    """The TIFF of issue 29 (orientation in the first directory): OpenCV turned it and read_image turned it again,
    so orientations 2-4 came out unturned and 5-8 did not decode."""
    from ahiq.data.images import read_image

    img = picture()
    stored = img.astype(np.uint16) * 257 if depth == np.uint16 else img
    for orientation in range(1, 9):
        write_tiff(tmp_path / "t.tif", stored, orientation)
        shown = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "t.tif")).convert("RGB"))
        got = read_image(tmp_path / "t.tif")
        got = np.round(got * 255).astype(np.uint8) if depth == np.uint16 else got
        assert got.shape == shown.shape and (got == shown).all(), orientation


def test_a_turned_tiff_scores_as_the_png_viewers_see(tmp_path, capsys):
    """A TIFF stored mirrored with orientation 2 (or turned, 6) shows what a.png shows, and scores the same."""
    random_pair_images(tmp_path, [("a.png", "r.png")], 64, 64)
    shown = cv2.imread(str(tmp_path / "dist" / "a.png"))[..., ::-1]
    write_tiff(tmp_path / "dist" / "a2.tif", np.ascontiguousarray(shown[:, ::-1]), 2)
    write_tiff(tmp_path / "dist" / "a6.tif", np.ascontiguousarray(np.rot90(shown, 1)), 6)
    rows = scored(capsys, ["--ref", tmp_path / "ref" / "r.png", "--dist", tmp_path / "dist", "--output",
                           tmp_path / "s.csv", "--crops", "five"])
    scores = {Path(d).name: s for d, _r, s in rows}
    assert scores["a2.tif"] == scores["a.png"] == scores["a6.tif"], scores


def test_any_file_name_decodes_or_is_one_line(tmp_path):
    """A name that is not UTF-8 (any bytes but / and NUL): OpenCV's imread crashed the process (rc 139)."""
    name = os.fsdecode(b"dist_\xff\xfe.png")
    cv2.imwrite(str(tmp_path / "plain.png"), picture())
    os.replace(tmp_path / "plain.png", tmp_path / name)
    code = ("import os, sys\nfrom ahiq.data.images import read_image\n"
            "print(read_image(os.path.join(sys.argv[1], os.fsdecode(b'dist_\\xff\\xfe.png'))).shape)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "(24, 40, 3)", (proc.returncode, proc.stderr)


def png_header_only(path: Path, width: int, height: int, depth: int = 16) -> None:
    """A PNG whose header announces ``width x height`` and whose body is a few bytes (what a decompression bomb,
    or a damaged file, looks like before decoding)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # pytest resets filters; see the process
def test_the_pixel_budget_is_checked_from_the_header(tmp_path, capsys):
    """The 9500x9500 16-bit PNG of issue 29 took 4.5 GB and 46 s: now one line from its header, at once; the
    option lowers and raises the budget."""
    random_pair_images(tmp_path, [("I01_01_01.png", "I01.png")], 32, 32)
    png_header_only(tmp_path / "dist" / "I01_02_01.png", 9500, 9500)
    before = fingerprint(tmp_path)
    argv = ["--ref", tmp_path / "ref", "--dist", tmp_path / "dist", *TINY_CLI, *NO_HEADS]
    proc = run_main(score.main, argv, capsys)  # refused from the header: decoding this body says "cannot decode"
    assert proc.returncode == 2, proc.stderr
    assert "I01_02_01.png: 9500x9500 is 90.2 megapixels, over the budget of 50 per image" in proc.stderr
    assert "give a larger --max_megapixels value (up to 178)" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_main(score.main, [*argv, "--max_megapixels", "100"], capsys)  # raised: decoded, and found damaged
    assert proc.returncode == 2 and "I01_02_01.png: cannot decode image" in proc.stderr, proc.stderr
    refused(capsys, score.main, [*argv, "--max_megapixels", "0.001", "--skip_bad"], "no usable image pairs")
    refused(capsys, score.main, [*argv, "--max_megapixels", "500"], "--max_megapixels 500.0: must be a number")
    assert fingerprint(tmp_path) == before
    # PIL's own DecompressionBombWarning (over 89.5 megapixels) is not shown: the budget's line says it.
    code = ("import sys\nfrom ahiq.data.images import read_image\nfrom ahiq.utils.errors import UserError\n"
            "try:\n    read_image(sys.argv[1])\nexcept UserError as err:\n    print(err)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "dist" / "I01_02_01.png")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.stderr == "" and "90.2 megapixels, over the budget" in proc.stdout, proc.stderr


def test_screening_decodes_in_flight_stay_within_memory():
    from ahiq.data.screening import MemoryGate

    gate, lock, peak, used = MemoryGate(capacity=100), threading.Lock(), [0], [0]

    def work(size: int) -> None:
        gate.take(size)
        with lock:
            used[0] += size
            peak[0] = max(peak[0], used[0])
        time.sleep(0.01)
        with lock:
            used[0] -= size
        gate.give(size)

    threads = [threading.Thread(target=work, args=(size,)) for size in [60, 30, 30, 150, 40, 60, 10] * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert peak[0] <= 150 and all(not t.is_alive() for t in threads)  # one larger than the gate runs alone


def test_animations_and_sub_folders_are_named(tmp_path, capsys):
    random_pair_images(tmp_path, [("I01_01_01.png", "I01.png")], 32, 32)
    frames = [Image.fromarray(np.full((32, 32, 3), v, np.uint8)) for v in (40, 200)]
    frames[0].save(tmp_path / "dist" / "I01_02_01.webp", save_all=True, append_images=frames[1:], lossless=True)
    (tmp_path / "dist" / "more").mkdir()
    proc = run_main(score.main, ["--ref", tmp_path / "ref", "--dist", tmp_path / "dist", "--quiet", *TINY_CLI,
                                 *NO_HEADS], capsys)
    assert proc.returncode == 0, proc.stderr
    assert "note: left out 1 entry of" in proc.stderr and "more (sub-folder, not searched)" in proc.stderr
    assert "warning: 1 image(s) are animations (first: " in proc.stderr and "I01_02_01.webp" in proc.stderr


# --- checks when options and files are read ---------------------------------------------------------------------

def test_split_ratio_config_version_and_csv_headers_are_checked_when_read(tmp_path, capsys):
    random_pair_images(tmp_path, [("A0001_00_00.png", "A0001.png"), ("A0002_00_00.png", "A0002.png")], 32, 32)
    before = fingerprint(tmp_path)
    data = ["--dataset", "csv", "--data_root", tmp_path, "--checkpoints_dir", tmp_path / "runs", *TINY_CLI]
    refused(capsys, train.main, [*data, "--split_ratio", "1:0"], "--split_ratio 1:0", "validation part is 0")
    refused(capsys, train.main, [*data, "--split_ratio", "3:0:1"], "validation part is 0")
    (tmp_path / "opt.json").write_text(json.dumps({"script": "train", "config_version": 99, "n_epoch": 2}))
    refused(capsys, train.main, [*data, "--config", tmp_path / "opt.json"], "config_version 99", "update AHIQ")
    (tmp_path / "labels.csv").write_text("dist,ref,score,score\ndist/A0001_00_00.png,ref/A0001.png,1,2\n")
    refused(capsys, test_script.main, [*data, "--split", "all", "--output", tmp_path / "t.txt", *NO_HEADS],
            "labels.csv:1", "names score more than once")
    assert not (tmp_path / "runs").exists()
    assert {k: v for k, v in fingerprint(tmp_path).items() if k not in ("opt.json", "labels.csv")} == before


def test_notes_come_from_rank_0_and_name_arguments_cleanly(tmp_path, capsys, monkeypatch):
    from ahiq.data.images import note_skipped
    from ahiq.utils.errors import UserError, named

    monkeypatch.setenv("RANK", "1")
    note_skipped(tmp_path, ["x.txt (not an image format we read (.txt))"])
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    note_skipped(tmp_path, ["x.txt (not an image format we read (.txt))"])
    assert capsys.readouterr().err.startswith("note: left out 1 entry")
    message = UserError(f"check {named('vit')}, {named('vit_blocks')} against it")
    assert message.for_cli() == "check --vit, --vit_blocks against it" and str(message) == "check vit, vit_blocks against it"
    random_pair_images(tmp_path, [("A0001_00_00.png", "A0001.png"), ("A0002_00_00.png", "A0002.png")], 32, 32)
    (tmp_path / "labels.csv").write_text("dist,ref,score,split\ndist/A0001_00_00.png,ref/A0001.png,1,train\n"
                                         "dist/A0002_00_00.png,ref/A0002.png,2,val\n")
    proc = run_main(train.main, ["--dataset", "csv", "--data_root", tmp_path, "--split_ratio", "3:1", "--check_data",
                                 "--checkpoints_dir", tmp_path / "runs", *TINY_CLI], capsys)
    assert "note: --split_file/--split_ratio not used: the labels' split column decides" in proc.stderr, proc.stderr


def test_score_onnx_refuses_a_foreign_model_in_one_line(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "foreign",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "foreign.onnx")
    random_pair_images(tmp_path, [("I01_01_01.png", "I01.png")], 32, 32)
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import score_onnx
    finally:
        sys.path.remove(str(ROOT / "examples"))
    line = refused(capsys, score_onnx.main, ["--model", tmp_path / "foreign.onnx", "--ref", tmp_path / "ref" / "I01.png",
                                             "--dist", tmp_path / "dist" / "I01_01_01.png"], "foreign.onnx",
                   "not an AHIQ export's")
    assert "x [1, 3]" in line


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
    argv = ["--ref", str(ref), "--dist", str(dist), "--crop_size", "32", "--output", str(out), "--quiet", *TINY_CLI]
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
    score_main(["--ref", str(ref), "--dist", str(dist), "--crop_size", "32", "--quiet", *TINY_CLI])
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "warning: 2 image(s) have an alpha channel" in err and "scored 4 pair(s)" in err


def test_folder_scans_name_what_they_leave_out(pairs, tmp_path, capsys):
    dist = pairs / "dist"
    (dist / "broken.png").symlink_to(dist / "nowhere.png")
    (dist / "loop.png").symlink_to(dist / "loop.png")
    (dist / "anim.gif").write_bytes(b"GIF89a")
    proc = run_main(score.main, ["--ref", pairs / "ref", "--dist", dist, "--quiet", *TINY_CLI, *NO_HEADS], capsys)
    assert proc.returncode == 0, proc.stderr
    note = next(line for line in proc.stderr.splitlines() if line.startswith("note: left out 3 entries"))
    assert "broken.png (broken or looping link)" in note and "loop.png" in note and "anim.gif (not an image" in note
