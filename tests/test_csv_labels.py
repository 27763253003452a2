"""Your own data: DIR/labels.csv read row by row, one-line errors with line numbers, and the whole flow
(--check_data, training, test.py --split all, maps) on real images in mixed sub-folders."""
from __future__ import annotations

import re
import shutil

import pytest

from ahiq.data.csv_labels import load_csv_dataset
from tests.conftest import SHARED, TINY_CLI, random_pair_images
from ahiq.utils.errors import UserError

CENTER = [*TINY_CLI, "--crops", "center"]


def test_rows_paths_split_and_orientation(tmp_path):
    (tmp_path / "labels.csv").write_text(
        "\ufeffid,Dist,ref,score,split,comment\r\n"
        "1,a/x1.png,refs/r1.png,3.5,train,first\r\n"
        "2,./b\\x2.png,refs/r1.png,1.25,Val,\r\n"
        "\r\n"
        "3,x3.png,other/r1.png,4,test,same stem elsewhere\r\n")
    pairs = load_csv_dataset(tmp_path, lower_better=True)
    assert [p.name for p in pairs] == ["a/x1.png", "b/x2.png", "x3.png"]
    assert [p.dist for p in pairs] == [tmp_path / "a/x1.png", tmp_path / "b/x2.png", tmp_path / "x3.png"]
    assert [p.ref_id for p in pairs] == ["refs/r1.png", "refs/r1.png", "other/r1.png"]  # distinct by path
    assert [p.score for p in pairs] == [-3.5, -1.25, -4.0] and [p.raw for p in pairs] == [3.5, 1.25, 4.0]
    assert [p.split for p in pairs] == ["train", "val", "test"]
    assert [p.score for p in load_csv_dataset(tmp_path)] == [3.5, 1.25, 4.0]


@pytest.mark.parametrize("text, needle", [
    ("dist,reference,score\nx.png,r.png,1\n", "labels.csv:1: the header lacks ref"),
    ("dist,ref,score\nx.png,r.png,1\ny.png,r.png,good\n", "labels.csv:3: score 'good' is not a number"),
    ("dist,ref,score\nx.png,r.png\n", "labels.csv:2: 2 fields for the header's 3"),
    ("dist,ref,score,split\nx.png,r.png,1,train\ny.png,r.png,2,validation\n", "labels.csv:3: split 'validation'"),
    ("dist,ref,score\nx.png,r.png,1\nx.png,r.png,2\n", "labels.csv:3: x.png is listed again (first at line 2)"),
    ("dist,ref,score\n,r.png,1\n", "labels.csv:2: empty dist path"),
    ("dist,ref,score\n", "no pairs listed"),
])
def test_bad_rows_are_one_line_with_the_line_number(tmp_path, text, needle):
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(UserError) as err:
        load_csv_dataset(tmp_path)
    assert needle in str(err.value) and len(str(err.value).splitlines()) == 1


def test_missing_labels_file_names_it(tmp_path, capsys):
    from ahiq.commands import train

    with pytest.raises(SystemExit) as exit_info:
        train.main(["--dataset", "csv", "--data_root", str(tmp_path), "--check_data"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "labels.csv: label file not found" in err and len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory):
    """Real KADID-10k images (../shared mini set, else generated stand-ins) and generated pairs in mixed
    sub-folders, listed in labels.csv with paths relative to the folder: 10 pairs from 3 references."""
    root = tmp_path_factory.mktemp("own")
    mini = SHARED / "data" / "mini" / "KADID-10k-mini"
    kadid = ["I01_01_02.png", "I01_01_05.png", "I01_06_05.png", "I01_15_05.png"]
    if mini.is_dir():
        (root / "kadid" / "dist").mkdir(parents=True)
        shutil.copy(mini / "images" / "I01.png", root / "kadid" / "I01.png")
        for name in kadid:
            shutil.copy(mini / "images" / name, root / "kadid" / "dist" / name)
    else:
        random_pair_images(root / "kadid", [(n, "I01.png") for n in kadid], 64, 64, seed=5)
        (root / "kadid" / "ref" / "I01.png").rename(root / "kadid" / "I01.png")
    gen = [(f"r{r}_{k}.png", f"r{r}.png") for r in (1, 2) for k in range(3)]
    random_pair_images(root / "gen", gen, 48, 48, seed=9)
    rows = [(f"kadid/dist/{n}", "kadid/I01.png", s) for n, s in zip(kadid, (4.33, 1.1, 2.27, 1.33))]
    rows += [(f"gen/dist/{d}", f"gen/ref/{r}", 4.5 - k % 3) for k, (d, r) in enumerate(gen)]
    return root, rows


def _write(root, rows, header="dist,ref,score", extra=lambda row: ()):
    (root / "labels.csv").write_text(header + "\n" + "".join(
        ",".join(map(str, (*row, *extra(row)))) + "\n" for row in rows))


def test_check_data_counts_pairs_and_distinct_references(own_folder, capsys):
    from ahiq.commands import train

    root, rows = own_folder
    _write(root, rows)
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--dataset", "csv", "--data_root", str(root), "--check_data", "--crop_size", "32",
                    "--split_ratio", "1:1:1"])
    assert exit_info.value.code == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("data check: ")]
    counts = [tuple(map(int, re.search(r"(\d+) pairs from (\d+) references; 0 problems", x).groups())) for x in lines]
    assert len(counts) == 3 and sum(c[0] for c in counts) == 10 and sum(c[1] for c in counts) == 3
    assert all(c[1] == 1 for c in counts)  # reference-disjoint: one reference per part


def test_train_and_test_on_own_folder(own_folder, tmp_path, capsys):
    """The split column decides the parts, DMOS-like labels are flipped for training and metrics, and test.py
    names every result and map by its path as written in labels.csv."""
    import numpy as np

    from ahiq.commands import test as test_script
    from ahiq.commands import train

    root, rows = own_folder
    split = {"kadid/I01.png": "train", "gen/ref/r1.png": "train", "gen/ref/r2.png": "val"}
    dmos = [(d, r, round(6 - s, 2)) for d, r, s in rows]  # lower = better
    _write(root, dmos, "dist,ref,score,split", lambda row: (split[row[1]],))
    common = ["--dataset", "csv", "--data_root", str(root), "--lower_better", "--checkpoints_dir", str(tmp_path),
              "--name", "own"]
    train.main([*common, "--n_epoch", "1", "--max_steps", "1", "--batch_size", "4", "--val_crops", "center",
                "--progress", "false", *TINY_CLI])
    out = capsys.readouterr().out
    assert "train=7 pairs from 2 references val=3 pairs from 1 references" in out
    output = tmp_path / "all.txt"
    metrics = test_script.main([*common, "--split", "all", "--output", str(output), "--save_maps",
                                str(tmp_path / "maps"), *CENTER])
    lines = output.read_text().splitlines()
    assert [x.split(",")[0] for x in lines] == [d for d, _, _ in rows]
    maps = sorted(str(p.relative_to(tmp_path / "maps")) for p in (tmp_path / "maps").rglob("*.png"))
    assert maps == sorted(d for d, _, _ in rows)  # same names, .png already
    table = (tmp_path / "all_labels.csv").read_text().splitlines()
    assert table[0] == "name,prediction,label,raw_label"
    assert [(x.split(",")[0], float(x.split(",")[2]), float(x.split(",")[3])) for x in table[1:]] == \
        [(d, -s, s) for d, _, s in dmos]
    preds = np.array([float(x.split(",")[1]) for x in lines])
    labels = -np.array([s for _, _, s in dmos])
    from scipy import stats

    assert metrics["SRCC"] == pytest.approx(stats.spearmanr(preds, labels)[0], abs=1e-6)
    val = test_script.main([*common, "--split", "val", "--output", str(tmp_path / "val.txt"), *CENTER])
    assert [x.split(",")[0] for x in (tmp_path / "val.txt").read_text().splitlines()] == \
        [d for d, r, _ in rows if split[r] == "val"] and np.isfinite(val["SRCC"])


def test_repeated_splits_on_own_folder(own_folder, tmp_path):
    """experiments/standard.py on labels.csv: reference-disjoint parts by distinct ref path, DMOS-like labels
    flipped, the test part scored by its listed paths."""
    from experiments import standard

    root, rows = own_folder
    _write(root, [(d, r, round(6 - s, 2)) for d, r, s in rows])
    table = standard.main(["--dataset", "csv", "--data_root", str(root), "--lower_better", "--seeds", "1",
                           "--split_ratio", "1:1:1", "--test_crops", "center", "--checkpoints_dir", str(tmp_path),
                           "--n_epoch", "1", "--max_steps", "1", "--batch_size", "4", "--val_crops", "center",
                           "--progress", "false", *TINY_CLI])
    assert table.splitlines()[0].startswith("| csv (1 splits) | SRCC | PLCC | KRCC |")
    tested = [x.split(",")[0] for x in (tmp_path / "csv_split0" / "test_results.txt").read_text().splitlines()]
    listed = [d for d, _, _ in rows]
    refs = {r for d, r, _ in rows if d in tested}
    assert tested and set(tested) <= set(listed) and len(refs) == 1
    assert tested == [d for d, r, _ in rows if r in refs]  # the whole reference, in file order


def test_check_data_takes_the_checkpoint_crop(own_folder, tmp_path, capsys):
    """Without --crop_size, --check_data checks against the crop training would take: the checkpoint's."""
    from ahiq.commands import train
    from ahiq.models.checkpoint import save_checkpoint
    from tests.conftest import tiny_model

    root, rows = own_folder
    _write(root, rows)
    checkpoint = tmp_path / "trained.pth"
    save_checkpoint(checkpoint, tiny_model(0), extra_meta={"train": {"crop_size": 96}})
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--dataset", "csv", "--data_root", str(root), "--check_data", "--split_ratio", "1:1:1",
                    "--checkpoint", str(checkpoint)])
    out = capsys.readouterr()
    assert exit_info.value.code == 1
    assert "96x96" in out.out + out.err and "224x224" not in out.out + out.err
    # A printed problem line names the flag, as an error does (the marker was printed raw).
    assert "give a smaller --crop_size value" in out.out and "{arg:" not in out.out + out.err


def test_printed_lines_name_arguments_as_the_entry_point_does(capsys):
    from ahiq.utils.errors import arg, cli_main, plain

    line = f"give a smaller {arg('crop_size')}value"
    assert plain(line) == "give a smaller crop_size=value"  # from Python
    assert cli_main(lambda: plain(line))() == "give a smaller --crop_size value"  # inside a script
    assert plain(line) == "give a smaller crop_size=value"  # and back after it


def test_a_reference_named_three_ways_is_one_reference(tmp_path):
    from ahiq.data.datasets import DataConfig
    from ahiq.data.splits import prepare_splits

    names = [(f"A000{r}_0{k}_00.png", f"A000{r}.png") for r in range(1, 7) for k in range(2)]
    random_pair_images(tmp_path, names, 32, 32)
    spell = [lambda r: f"ref/{r}", lambda r: f"ref/../ref/{r}", lambda r: str(tmp_path / "ref" / r)]
    lines = [f"dist/{d},{spell[k % 3](r)},{k}" for k, (d, r) in enumerate(names)]
    (tmp_path / "labels.csv").write_text("dist,ref,score\n" + "\n".join(lines) + "\n")
    parts, _ = prepare_splits(DataConfig("csv", str(tmp_path), split_ratio="4:1:1"), None)
    refs = {part: {p.ref_id for p in pairs} for part, pairs in parts.items()}
    assert sum(map(len, refs.values())) == 6 and all(r.startswith("ref/A000") for v in refs.values() for r in v)
    assert not (refs["train"] & refs["val"]) and not (refs["train"] & refs["test"])
    (tmp_path / "labels.csv").write_text("dist,ref,score\ndist/A0001_00_00.png,ref/A0001.png,1\n"
                                         "dist/../dist/A0001_00_00.png,ref/A0001.png,2\n")
    from ahiq.data.csv_labels import load_csv_dataset
    from ahiq.utils.errors import UserError

    with pytest.raises(UserError, match=r"labels.csv:3: dist/../dist/A0001_00_00.png is listed again"):
        load_csv_dataset(tmp_path)
