"""Tests for data/standard.py: TID2013, KADID-10k, CSIQ and LIVE read from their distributed layouts.

Trees are built in tmp_path with tiny images under the real names of <shared>/data/labels; tests that need
the full real label files skip when the shared folder ($AHIQ_SHARED, default ../shared) is absent.
"""
from __future__ import annotations

import csv
import itertools
import re
from collections import Counter
from pathlib import Path

import pytest
import scipy.io

from ahiq.commands import train
from ahiq.data.standard import LOADERS, load_csiq, load_kadid10k, load_live, load_tid2013
from tests import fixtures_standard as fx
from tests.conftest import SHARED_HINT, run_main
from ahiq.utils.errors import UserError


def _real(name: str) -> Path:
    folder = fx.real_labels(name)
    if folder is None:
        pytest.skip(f"{fx.LABELS / name} absent; {SHARED_HINT}")
    return folder


def _by_name(pairs: list) -> dict[str, object]:
    return {p.name: p for p in pairs}


def test_loaders_table_names_the_four_sets() -> None:
    assert LOADERS == {"tid2013": load_tid2013, "kadid10k": load_kadid10k, "csiq": load_csiq, "live": load_live}


# ---- TID2013 ---------------------------------------------------------------------------------------------

def test_tid2013_real_labels_give_3000_pairs_from_25_references(tmp_path: Path) -> None:
    _real("TID2013")
    root = fx.build_tid2013(tmp_path / "tid2013")
    pairs = load_tid2013(root)
    assert len(pairs) == 3000
    assert len({p.ref_id for p in pairs}) == 25
    assert Counter(p.ref_id for p in pairs)["i25"] == 120
    assert all(p.dist.is_file() and p.ref.is_file() for p in pairs)
    assert [p.dist for p in pairs] == sorted(p.dist for p in pairs)
    assert all(p.score == p.raw for p in pairs)
    assert min(p.score for p in pairs) == pytest.approx(0.24242)
    assert max(p.score for p in pairs) == pytest.approx(7.21429)
    assert {p.ref.name for p in pairs} == {f"I{i:02d}.BMP" for i in range(1, 25)} | {"i25.bmp"}


def test_tid2013_matches_label_names_to_files_case_insensitively(tmp_path: Path) -> None:
    root = fx.build_tid2013(tmp_path / "tid2013")  # labels say I01_11_1.BMP, the file is i01_11_1.bmp
    pairs = _by_name(load_tid2013(root))
    upper = pairs["i01_11_1.bmp"]
    assert upper.dist == root / "distorted_images" / "i01_11_1.bmp" and upper.dist.is_file()
    assert upper.ref == root / "reference_images" / "I01.BMP"
    assert upper.score == pytest.approx(5.91429)
    i25 = pairs["i25_11_1.bmp"]  # label I25_11_1.BMP; reference i25.bmp is lower-case unlike I01..I24
    assert i25.ref == root / "reference_images" / "i25.bmp"
    assert i25.score == pytest.approx(6.08571)
    assert pairs["i01_01_1.bmp"].score == pytest.approx(5.51429)  # label I01_01_1.bmp


def test_tid2013_label_without_file_keeps_the_labels_path(tmp_path: Path) -> None:
    root = fx.build_tid2013(tmp_path / "tid2013")
    (root / "distorted_images" / "i01_11_1.bmp").unlink()
    pairs = load_tid2013(root)
    assert len(pairs) == len(fx.tid2013_rows())
    missing = [p for p in pairs if not p.dist.is_file()]
    assert [p.dist for p in missing] == [root / "distorted_images" / "I01_11_1.BMP"]
    assert missing[0].ref == root / "reference_images" / "I01.BMP"


def test_tid2013_lists_pairs_without_any_images(tmp_path: Path) -> None:
    root = fx.build_tid2013(tmp_path / "tid2013", images=False)
    pairs = load_tid2013(root)
    assert len(pairs) == len(fx.tid2013_rows())
    assert _by_name(pairs)["I01_11_1.BMP"].ref_id == "i01"


# ---- KADID-10k -------------------------------------------------------------------------------------------

def test_kadid10k_real_labels_give_10125_pairs_from_81_references(tmp_path: Path) -> None:
    _real("KADID-10k")
    root = fx.build_kadid10k(tmp_path / "kadid")
    pairs = load_kadid10k(root)
    assert len(pairs) == 10125
    assert len({p.ref_id for p in pairs}) == 81
    assert set(Counter(p.ref_id for p in pairs).values()) == {125}
    assert all(p.dist.is_file() and p.ref.is_file() for p in pairs)
    assert all(p.dist.parent == root / "images" == p.ref.parent for p in pairs)
    named = _by_name(pairs)
    assert named["I02_03_04.png"].score == named["I02_03_04.png"].raw == pytest.approx(1.8)
    assert named["I81_24_05.png"].ref.name == "I81.png"
    assert (min(p.score for p in pairs), max(p.score for p in pairs)) == (1.0, 4.93)


def test_kadid10k_mini_subset_reads_real_scores_in_file_order() -> None:
    if not fx.KADID_MINI.is_dir():
        pytest.skip(f"{fx.KADID_MINI} absent; {SHARED_HINT}")
    pairs = load_kadid10k(fx.KADID_MINI)
    with open(fx.KADID_MINI / "dmos.csv", newline="") as f:
        file_order = [row["dist_img"] for row in csv.DictReader(f)]
    named = _by_name(pairs)
    assert [named[n].score for n in file_order] == [4.33, 1.1, 2.27, 1.33]
    assert [p.name for p in pairs] == ["I01_01_02.png", "I01_01_05.png", "I01_06_05.png", "I01_15_05.png"]
    assert {p.ref for p in pairs} == {fx.KADID_MINI / "images" / "I01.png"}
    assert all(p.dist.is_file() and p.ref.is_file() and p.raw == p.score for p in pairs)


# ---- CSIQ ------------------------------------------------------------------------------------------------

def test_csiq_real_labels_give_866_pairs_under_the_release_names(tmp_path: Path) -> None:
    labels = _real("CSIQ")
    root = fx.build_csiq(tmp_path / "csiq")
    pairs = load_csiq(root)
    assert len(pairs) == 866
    assert len({p.ref_id for p in pairs}) == 30
    assert all(p.dist.is_file() and p.ref.is_file() for p in pairs)
    with open(labels / "ref_dist_dmos.csv", newline="") as f:
        listed = {row["dist_name"]: row for row in csv.DictReader(f)}
    named = _by_name(pairs)
    assert set(named) == set(listed)
    for name, row in listed.items():
        assert named[name].ref.name == row["ref_name"]
        assert named[name].raw == pytest.approx(float(row["dmos"]), abs=5e-4)  # the sheet text has 3 decimals
    assert Counter(p.dist.parent.name for p in pairs) == {
        "awgn": 150, "jpeg": 150, "jpeg2000": 150, "fnoise": 150, "blur": 150, "contrast": 116}


def test_csiq_score_is_one_minus_dmos_and_raw_is_kept(tmp_path: Path) -> None:
    root = fx.build_csiq(tmp_path / "csiq")
    pairs = load_csiq(root)
    assert len(pairs) == len(fx.csiq_rows())
    first = _by_name(pairs)["1600.AWGN.1.png"]
    assert first.dist == root / "dst_imgs" / "awgn" / "1600.AWGN.1.png"
    assert first.ref == root / "src_imgs" / "1600.png"
    assert (first.raw, first.score) == pytest.approx((0.062, 0.938))
    by_dmos = sorted(pairs, key=lambda p: p.raw)
    assert all(a.score >= b.score for a, b in itertools.pairwise(by_dmos))
    assert by_dmos[0].score > by_dmos[-1].score
    assert all(p.score == pytest.approx(1.0 - p.raw) for p in pairs)


# ---- LIVE ------------------------------------------------------------------------------------------------

def test_live_real_labels_give_779_pairs_from_29_references(tmp_path: Path) -> None:
    labels = _real("LIVE")
    root = fx.build_live(tmp_path / "live")
    pairs = load_live(root)
    assert len(pairs) == 779
    assert len({p.ref_id for p in pairs}) == 29
    assert all(p.dist.is_file() and p.ref.is_file() for p in pairs)
    with open(labels / "ref_dist_dmos.csv", newline="") as f:
        listed = {row["dist_name"]: row for row in csv.DictReader(f)}
    named = {p.dist.relative_to(root).as_posix(): p for p in pairs}
    assert set(named) == set(listed)
    for name, row in listed.items():
        assert named[name].ref.relative_to(root).as_posix() == row["ref_name"]
        assert named[name].raw == pytest.approx(float(row["mos"]), abs=1e-6)
    assert Counter(p.dist.parent.name for p in pairs) == {
        "jp2k": 169, "jpeg": 175, "wn": 145, "gblur": 145, "fastfading": 145}


def test_live_leaves_out_reference_copies(tmp_path: Path) -> None:
    rows = fx.live_rows()
    root = fx.build_live(tmp_path / "live", rows)
    copies = {dist for dmos, dist, _ in rows if float(dmos) == 0.0}
    if fx.real_labels("LIVE") is not None:
        assert len(copies) == 203
    listed = {p.dist.relative_to(root).as_posix() for p in load_live(root)}
    assert len(listed) == len(rows) - len(copies)
    assert not listed & copies
    assert "jp2k/img1.bmp" in copies and "jp2k/img2.bmp" in listed  # both folders' first entries are real


def test_live_orgs_marks_the_copies_not_a_zero_dmos(tmp_path: Path) -> None:
    root = fx.build_live(tmp_path / "live", images=False)
    mat = scipy.io.loadmat(str(root / "dmos.mat"))
    orgs = mat["orgs"].copy()
    orgs[0, 1] = 1  # jp2k/img2.bmp, DMOS 28.0: marked a copy, so it goes
    scipy.io.savemat(root / "dmos.mat", {"dmos": mat["dmos"], "orgs": orgs})
    listed = {p.dist.relative_to(root).as_posix() for p in load_live(root)}
    assert "jp2k/img2.bmp" not in listed
    assert len(listed) == int((orgs == 0).sum())


def test_live_score_is_100_minus_dmos_and_raw_is_kept(tmp_path: Path) -> None:
    root = fx.build_live(tmp_path / "live", images=False)
    pairs = load_live(root)
    second = {p.dist.relative_to(root).as_posix(): p for p in pairs}["jp2k/img2.bmp"]
    assert second.ref == root / "refimgs" / "studentsculpture.bmp"
    assert (second.raw, second.score) == pytest.approx((28.003845, 71.996155))
    by_dmos = sorted(pairs, key=lambda p: p.raw)
    assert all(a.score >= b.score for a, b in itertools.pairwise(by_dmos))
    assert by_dmos[0].score > by_dmos[-1].score


# ---- without images, and bad label files -----------------------------------------------------------------

@pytest.mark.parametrize("name, build", [
    ("kadid10k", fx.build_kadid10k), ("csiq", fx.build_csiq), ("live", fx.build_live)])
def test_pairs_are_listed_the_same_without_images(tmp_path: Path, name: str, build) -> None:
    with_images = LOADERS[name](build(tmp_path / "a"))
    without = LOADERS[name](build(tmp_path / "b", images=False))
    assert [(p.dist.relative_to(tmp_path / "a"), p.score) for p in with_images] == \
        [(p.dist.relative_to(tmp_path / "b"), p.score) for p in without]
    assert not any(p.dist.exists() for p in without)


def _tid_rows(bad: tuple[str, ...]) -> list[tuple[str, ...]]:
    return [("5.51429", "I01_01_1.bmp"), bad, ("4.94444", "i01_01_3.bmp")]


def _kadid_rows(bad: tuple[str, ...]) -> list[tuple[str, ...]]:
    return [("I01_01_02.png", "I01.png", "4.33", "0.869"), bad]


@pytest.mark.parametrize("build, rows, where, what", [
    (fx.build_tid2013, _tid_rows(("5.5x", "i01_01_2.bmp")), "mos_with_names.txt:2:", "MOS '5.5x' is not a number"),
    (fx.build_tid2013, _tid_rows(("5.5", "i01_01_2.bmp", "x")), "mos_with_names.txt:2:", "found 3 fields"),
    (fx.build_tid2013, _tid_rows(("5.5", "i01_01_2.png")), "mos_with_names.txt:2:", "not a TID2013 name"),
    (fx.build_tid2013, _tid_rows(("5.5", "i01_01_1.BMP")), "mos_with_names.txt:2:", "listed again (first at line 1)"),
    (fx.build_kadid10k, _kadid_rows(("I01_01_05.png", "I01.png", "one", "0.3")), "dmos.csv:3:", "dmos 'one'"),
    (fx.build_kadid10k, _kadid_rows(("I01_01_05.png", "I01.png", "1.1")), "dmos.csv:3:", "3 fields"),
    (fx.build_kadid10k, _kadid_rows(("I01_01_02.png", "I01.png", "1.1", "0.3")), "dmos.csv:3:", "listed again"),
    (fx.build_csiq, [("1600", "1", "noise", "1", "0.061", "0.062"), ("1600", "1", "noise", "2", "0.097", "n/a")],
     "csiq.DMOS.xlsx:5:", "dmos 'n/a' is not a number"),
    (fx.build_csiq, [("1600", "7", "ringing", "1", "0.061", "0.062")], "csiq.DMOS.xlsx:4:", "unknown dst_type"),
])
def test_bad_label_line_names_file_and_line(tmp_path: Path, build, rows, where: str, what: str) -> None:
    root = build(tmp_path / "set", rows, images=False)
    loader = {fx.build_tid2013: load_tid2013, fx.build_kadid10k: load_kadid10k, fx.build_csiq: load_csiq}[build]
    with pytest.raises(UserError) as err:
        loader(root)
    message = str(err.value)
    assert message.startswith(str(root / where)) and what in message
    assert "\n" not in message


def test_live_bad_entries_name_the_file(tmp_path: Path) -> None:
    rows = fx.live_rows()
    root = fx.build_live(tmp_path / "short", rows[:-1], images=False)
    with pytest.raises(UserError, match=r"dmos\.mat: dmos has 981 entries, LIVE release 2 has 982"):
        load_live(root)
    nan_rows = list(rows)
    nan_rows[2] = ("nan", *rows[2][1:])
    root = fx.build_live(tmp_path / "nan", nan_rows, images=False)
    with pytest.raises(UserError, match=r"dmos\.mat: entry 3: dmos nan is not a number"):
        load_live(root)


@pytest.mark.parametrize("name, label", [
    ("tid2013", "mos_with_names.txt"), ("kadid10k", "dmos.csv"), ("csiq", "csiq.DMOS.xlsx"), ("live", "dmos.mat")])
def test_missing_label_file_is_a_user_error(tmp_path: Path, name: str, label: str) -> None:
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / label}: label file not found")):
        LOADERS[name](tmp_path)


def test_csiq_sheet_missing_is_a_user_error(tmp_path: Path) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    book.active.title = "by_type"
    book.save(tmp_path / "csiq.DMOS.xlsx")
    with pytest.raises(UserError, match=r"no sheet 'all_by_image' \(sheets: by_type\)"):
        load_csiq(tmp_path)


@pytest.mark.parametrize("name, builder, pairs, refs", [
    ("tid2013", "build_tid2013", 3000, 25), ("kadid10k", "build_kadid10k", 10125, 81),
    ("csiq", "build_csiq", 866, 30), ("live", "build_live", 779, 29)])
def test_check_data_counts_over_disjoint_splits(tmp_path, capsys, name, builder, pairs, refs):
    folder = {"tid2013": "TID2013", "kadid10k": "KADID-10k", "csiq": "CSIQ", "live": "LIVE"}[name]
    if fx.real_labels(folder) is None:
        pytest.skip(f"needs the real label files in {fx.LABELS}; {SHARED_HINT}")
    root = getattr(fx, builder)(tmp_path / name)
    proc = run_main(train.main, ["--dataset", name, "--data_root", root, "--check_data", "--crop_size", "32"], capsys)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = re.findall(r"^data check: (\w+) (\d+) pairs from (\d+) references; (\d+) problems$", proc.stdout, re.M)
    assert [f[0] for f in found] == ["train", "val", "test"]
    assert sum(int(f[1]) for f in found) == pairs and sum(int(f[2]) for f in found) == refs
    assert all(f[3] == "0" for f in found)


def test_check_data_collapses_a_missing_image_folder_into_one_line(tmp_path, capsys):
    from ahiq.commands import train

    root = fx.build_kadid10k(tmp_path / "kadid", images=False)
    n_pairs = len(load_kadid10k(root))
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--dataset", "kadid10k", "--data_root", str(root), "--check_data", "--crop_size", "32"])
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    problems = [line for line in out.splitlines() if line.startswith("  ")]
    counts = [int(m.replace(",", "")) for m in re.findall(r"images/ not found \(image folder\): ([\d,]+) pairs? affected",
                                                          out)]
    assert len(problems) == 3 and sum(counts) == n_pairs and n_pairs >= 7  # one line per split, not per pair
    assert re.findall(r"; (\d+) problems$", out, re.M) == ["1", "1", "1"]


def test_csiq_dst_type_ignores_case_and_spaces(tmp_path):
    from ahiq.data.standard import load_csiq
    from tests.fixtures_standard import build_csiq, csiq_rows

    rows = [r for r in csiq_rows() if r[2] in ("jpeg2000", "noise")][:4]
    spelled = [(r[0], r[1], "jpeg 2000" if r[2] == "jpeg2000" else "Noise", *r[3:]) for r in rows]
    pairs = load_csiq(build_csiq(tmp_path / "CSIQ", spelled, images=False))
    assert sorted(p.dist.parent.name for p in pairs) == sorted("jpeg2000" if r[2] == "jpeg2000" else "awgn"
                                                             for r in rows)
