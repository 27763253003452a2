"""Data: PIPAL layouts and list files, reference-disjoint splits, score normalisation, training crops."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from ahiq.data.sampling import CropPairs, EpochSampler, ScoreNorm
from ahiq.data.splits import apply_split, parse_ratio, read_split_file, split_references, write_split
from ahiq.data.pipal import load_folder_pairs, load_pipal_train, read_label_list
from ahiq.data.records import Pair
from tests.conftest import ROOT, run_main, shared_path
from tests.fixtures_pipal import build_pipal, label_files
from ahiq.utils.errors import UserError


@pytest.mark.parametrize("layout", ["Train_Dis", "Distortion"])
def test_pipal_layouts_list_every_labelled_pair(tmp_path, layout):
    labels = label_files(limit=4)
    names = build_pipal(tmp_path, labels, layout)
    pairs = load_pipal_train(tmp_path)
    assert [p.dist.name for p in pairs] == sorted(names)
    assert all(p.dist.is_file() and p.ref.is_file() for p in pairs)
    assert all(p.ref.name == p.dist.name[:5] + ".bmp" for p in pairs)
    first = labels[min(labels)].splitlines()[0].split(",")
    by_name = {p.dist.name: p for p in pairs}
    assert by_name[first[0]].score == pytest.approx(float(first[1]))


def test_real_pipal_label_counts():
    folder = shared_path("data", "labels", "PIPAL", "Train_Label")
    rows = [row for f in sorted(folder.glob("*.txt")) for row in read_label_list(f)]
    assert len(rows) == 23200 and len({r[0][:5] for r in rows}) == 200
    scores = np.array([r[1] for r in rows])
    assert 916 < scores.min() < 917 and 1835 < scores.max() < 1837


def test_list_file_forms(tmp_path):
    (tmp_path / "a.txt").write_text("A0001_00_00.bmp,1520.0648\nA0001_00_01.bmp,1437.0798\n")
    (tmp_path / "b.txt").write_bytes(b"A0005_10_00.bmp, 1238.7325\r\nA0005_10_02.bmp, 1299.3668")  # no final newline
    assert read_label_list(tmp_path / "a.txt")[1][:2] == ("A0001_00_01.bmp", 1437.0798)
    rows = read_label_list(tmp_path / "b.txt")
    assert [(n, s) for n, s, _ in rows] == [("A0005_10_00.bmp", 1238.7325), ("A0005_10_02.bmp", 1299.3668)]
    (tmp_path / "bad.txt").write_text("A0001_00_00.bmp,1520\nA0001_00_01.bmp;14\n")
    with pytest.raises(UserError, match=r"bad.txt:2: expected 'name,score'"):
        read_label_list(tmp_path / "bad.txt")
    (tmp_path / "nan.txt").write_text("A0001_00_00.bmp,abc\n")
    with pytest.raises(UserError, match=r"nan.txt:1"):
        read_label_list(tmp_path / "nan.txt")


def test_real_ntire2021_valid_list_and_folder_pairs(tmp_path):
    path = shared_path("data", "labels", "PIPAL", "NTIRE2021_valid_labels_organiser_copy.txt")
    rows = read_label_list(path)
    assert len(rows) == 1000 and len({n[:5] for n, _, _ in rows}) == 25
    assert rows[-1][0] == "A0240_10_74.bmp" and rows[-1][1] == pytest.approx(1290.9538)
    (tmp_path / "ref").mkdir()
    (tmp_path / "dis").mkdir()
    for name, _, _ in rows[:3]:
        (tmp_path / "dis" / name).write_bytes(b"")
    (tmp_path / "ref" / "A0005.bmp").write_bytes(b"")
    unlabelled = load_folder_pairs(tmp_path / "ref", tmp_path / "dis")
    assert [p.score for p in unlabelled] == [None] * 3 and unlabelled[0].ref.name == "A0005.bmp"
    labelled = load_folder_pairs(tmp_path / "ref", tmp_path / "dis", path)
    assert len(labelled) == 1000 and labelled[0].score == pytest.approx(1238.7325)


def test_reference_disjoint_split_and_reuse(tmp_path):
    refs = [f"a{i:04d}" for i in range(200)]
    pairs = [Pair(tmp_path / f"{r.upper()}_{k:02d}_00.bmp", tmp_path / f"{r.upper()}.bmp", float(k)) for r in refs
             for k in range(3)]
    split = split_references([p.ref_id for p in pairs], parse_ratio("6:2:2"), seed=3)
    assert [len(split[k]) for k in ("train", "val", "test")] == [120, 40, 40]
    assert not set(split["train"]) & set(split["val"]) and not set(split["val"]) & set(split["test"])
    assert split == split_references(refs, parse_ratio("6:2:2"), seed=3)
    assert split != split_references(refs, parse_ratio("6:2:2"), seed=4)
    parts = apply_split(pairs, split)
    assert sum(len(v) for v in parts.values()) == 600
    assert {p.ref_id for p in parts["val"]} == set(split["val"])
    write_split(tmp_path / "split.json", split, {"seed": 3})
    assert read_split_file(tmp_path / "split.json")[0] == split
    assert split_references(refs, parse_ratio("8:2"), 0)["test"] == []
    assert parse_ratio("9:1") == pytest.approx((0.9, 0.1, 0.0))
    for bad in ("9", "a:b", "0:1", "-1:2:3"):
        with pytest.raises(UserError, match="split_ratio="):
            parse_ratio(bad)


def test_split_by_pair_for_a_set_too_small_to_split_by_reference(tmp_path):
    """KADID-10k's layout with one reference and 6 distorted images: 6:2:2 by reference stops in one line naming
    --split all and --split_by pair; by pair the parts share the reference, and split.json (which says "by": "pair")
    gives the same parts back."""
    from ahiq.data.datasets import DataConfig
    from ahiq.data.splits import prepare_splits

    (tmp_path / "images").mkdir()
    names = [f"I01_{t:02d}_01.png" for t in range(1, 7)]
    (tmp_path / "dmos.csv").write_text("dist_img,ref_img,dmos,var\n" + "".join(
        f"{n},I01.png,{1 + 0.5 * k},0.1\n" for k, n in enumerate(names)))
    with pytest.raises(UserError) as err:
        prepare_splits(DataConfig("kadid10k", str(tmp_path)), None)
    assert err.value.for_cli() == (
        "1 reference(s) cannot be split 6:2:2 (one at least per part): to score the whole set without training use "
        "--split all (test.py), or split pairs instead of references with --split_by pair (a pipeline check: the "
        "parts then share references)")
    parts, info = prepare_splits(DataConfig("kadid10k", str(tmp_path), split_ratio="4:1:1", split_by="pair"), tmp_path)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [4, 1, 1] and info["by"] == "pair"
    assert sorted(p.name for part in parts.values() for p in part) == names
    assert {p.ref_id for part in parts.values() for p in part} == {"i01"}
    again, info = prepare_splits(DataConfig("kadid10k", str(tmp_path), split_file=str(tmp_path / "split.json")), None)
    assert {k: [p.name for p in v] for k, v in again.items()} == {k: [p.name for p in v] for k, v in parts.items()}
    assert info["by"] == "pair"
    with pytest.raises(UserError, match=r"6 pair\(s\) cannot be split 1:3:3 .* split_ratio=a larger first"):
        prepare_splits(DataConfig("kadid10k", str(tmp_path), split_by="pair", split_ratio="1:3:3"), None)


def test_score_normalisation_round_trip():
    scores = np.array([916.7, 1200.0, 1836.0, 1500.5])
    norm = ScoreNorm.fit(scores)
    assert norm(scores).min() == 0 and norm(scores).max() == 1
    np.testing.assert_allclose(norm.inverse(norm(scores)), scores, rtol=0, atol=1e-9)
    again = ScoreNorm.from_dict(norm.to_dict())
    assert again == norm and again(1836.0) == 1.0
    assert ScoreNorm.fit(scores, "none")(scores).tolist() == scores.tolist()
    with pytest.raises(UserError, match="equal"):
        ScoreNorm.fit([3.0, 3.0])


def ramp_pairs(folder, h: int, w: int, n: int) -> list[Pair]:
    """``n`` copies of one pair of identical ``h x w`` images whose red channel is 30 x row, green 25 x column."""
    import cv2

    ramp = np.zeros((h, w, 3), np.uint8)
    ramp[..., 0] = np.arange(h)[:, None] * 30  # red encodes the row
    ramp[..., 1] = np.arange(w)[None, :] * 25  # green encodes the column
    cv2.imwrite(str(folder / "d.png"), ramp[..., ::-1])
    cv2.imwrite(str(folder / "r.png"), ramp[..., ::-1])
    return [Pair(folder / "d.png", folder / "r.png", 1.0)] * n


def test_crops_share_window_reach_every_position_and_flip_is_horizontal(tmp_path):
    h, w, c = 7, 9, 4
    pairs = ramp_pairs(tmp_path, h, w, 400)
    data = CropPairs(pairs, np.ones(400), crop=c, flip="horizontal", seed=5)
    tops, lefts, flips = set(), set(), 0
    for i in range(400):
        d, r, target, index = data[i]
        assert torch.equal(d, r) and index == i and target.item() == 1.0
        rows, cols = d[0, :, 0] // 30, d[1, 0, :] // 25
        assert (rows.diff() == 1).all()  # rows keep their order: the flip is left-right
        flipped = bool(cols[0] > cols[-1])
        flips += flipped
        tops.add(int(rows[0]))
        lefts.add(int(cols.min()))
    assert tops == set(range(h - c + 1)) and lefts == set(range(w - c + 1))
    assert 120 < flips < 280
    d1 = data[3][0]
    assert not all(torch.equal(data[400 + i][0], data[i][0]) for i in range(20))  # epoch 1 draws anew
    assert data[403][3] == 3 and torch.equal(data[3][0], d1)  # same (seed, epoch, index) -> same crop
    vertical = CropPairs(pairs, np.ones(400), crop=c, flip="vertical", seed=5)
    assert any((vertical[i][0][0, :, 0] // 30).diff()[0] == -1 for i in range(20))  # the authors' up-down flip


@pytest.mark.slow  # 23200 PIPAL files written, then train.py as a process
def test_check_data_real_pipal_counts_and_a_missing_image(tmp_path, capsys):
    from ahiq.commands import train

    shared_path("data", "labels", "PIPAL", "Train_Label")
    root = tmp_path / "pipal"
    names = build_pipal(root, label_files(), "Train_Dis")
    assert len(names) == 23200
    (root / "Train_Dis" / "A0003_00_00.bmp").unlink()  # an image of a training reference (split seed 0)
    proc = run_main(train.main, ["--dataset", "pipal", "--data_root", root, "--check_data", "--crop_size", "32"], capsys)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert [line for line in proc.stdout.splitlines() if line.startswith("data check:")] == [
        "data check: train 20880 pairs from 180 references; 1 problems",
        "data check: val 2320 pairs from 20 references; 0 problems"]
    assert "A0003_00_00.bmp: image not found" in proc.stdout
    # The other layout (Distortion_1..4) on twenty references, then as a process with a missing image: the exit
    # status says whether the data are fit to train on, and a problem is a line, not a traceback.
    small = tmp_path / "small"
    names = build_pipal(small, label_files(limit=20), "Distortion")
    argv = ["--dataset", "pipal", "--data_root", str(small), "--check_data", "--crop_size", "32"]
    for code in (0, 1):
        if code:
            next(small.glob("Distortion_3/*.bmp")).unlink()
            proc = subprocess.run([sys.executable, "train.py", *argv], cwd=ROOT, capture_output=True, text=True)
        else:
            proc = run_main(train.main, argv, capsys)
        found = re.findall(r"^data check: \w+ (\d+) pairs from (\d+) references; (\d+) problems$", proc.stdout, re.M)
        assert proc.returncode == code and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
        assert sum(int(n) for n, _, _ in found) == len(names) and sum(int(r) for _, r, _ in found) == 20
        assert sum(int(p) for _, _, p in found) == code
    assert "image not found" in proc.stdout


def test_epoch_sampler_shards_cover_every_index_once_per_epoch():
    n = 10
    whole = EpochSampler(n, seed=1)
    whole.set_epoch(2)
    keys = list(whole)
    assert sorted(keys) == [20 + i for i in range(n)] and keys == list(whole)
    whole.set_epoch(3)
    assert [k - 30 for k in whole] != [k - 20 for k in keys]
    shards = [EpochSampler(n, seed=1, rank=r, world_size=3) for r in range(3)]
    for s in shards:
        s.set_epoch(2)
    taken = [k for s in shards for k in s]
    assert all(len(list(s)) == 4 for s in shards) and set(taken) == set(keys) and len(taken) == 12


def test_authors_crop_rule_never_reaches_the_last_row_or_column(tmp_path):
    h, w, c = 7, 9, 4
    pairs = ramp_pairs(tmp_path, h, w, 300)
    for rule, last in (("authors", 0), ("full", 1)):
        data = CropPairs(pairs, np.ones(300), crop=c, flip="none", seed=5, crop_rule=rule)
        tops = {int(data[i][0][0, 0, 0]) // 30 for i in range(300)}
        lefts = {int(data[i][0][1, 0, 0]) // 25 for i in range(300)}
        assert tops == set(range(h - c + last)) and lefts == set(range(w - c + last)), rule
    whole = CropPairs(pairs, np.ones(300), crop=h, flip="none", crop_rule="authors")  # crop = height: top 0
    assert int(whole[0][0][0, 0, 0]) == 0
    with pytest.raises(UserError, match="crop_rule=exact"):
        CropPairs(pairs, np.ones(300), crop=c, crop_rule="exact")


def test_8_and_16_bit_images_meet_as_unit_floats_wherever_they_are_stacked():
    from ahiq.data.images import common_depth
    from ahiq.engine.scoring import crop_batch

    eight = np.full((4, 4, 3), 51, dtype=np.uint8)
    sixteen = np.full((4, 4, 3), 0.25, dtype=np.float32)  # read_image's 16-bit output
    same = [eight, eight.copy()]
    assert all(a is b for a, b in zip(common_depth(same), same))  # one depth: untouched (uint8 stays uint8)
    mixed = common_depth((eight, sixteen))
    assert [m.dtype for m in mixed] == [np.float32, np.float32]
    assert np.allclose(mixed[0], 0.2) and mixed[1] is sixteen
    to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)  # noqa: E731
    batch = crop_batch([to_t(eight), to_t(sixteen)], [[(0, 0)], [(1, 1)]], 2)
    assert batch.dtype == torch.float32 and torch.allclose(batch[0], torch.tensor(0.2)) and torch.all(batch[1] == 0.25)
    target = torch.tensor(0.5)
    stacked = CropPairs.collate([(to_t(eight), to_t(eight), target, 0), (to_t(sixteen), to_t(eight), target, 1)])
    assert stacked[0].dtype == torch.float32 and stacked[1].dtype == torch.uint8  # each column on its own
    assert torch.allclose(stacked[0][0], torch.tensor(0.2)) and stacked[3].tolist() == [0, 1]


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


def test_label_lines_split_at_cr_and_lf_only(tmp_path):
    from ahiq.data.labels import label_lines

    (tmp_path / "l.txt").write_text("a\u2028b.bmp,1\r\nc.bmp,2\rd.bmp,3\n", newline="")
    assert label_lines(tmp_path / "l.txt") == ["a\u2028b.bmp,1", "c.bmp,2", "d.bmp,3"]
