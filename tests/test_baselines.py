"""Baselines beside AHIQ: distortion types from each dataset's naming, piq's metrics on the decoded images, the
offline rule for learned metrics, and the comparison tables."""
from __future__ import annotations

import urllib.error
from collections import Counter

import cv2
import numpy as np
import piq
import pytest
import torch
from scipy import stats

from ahiq.data.datasets import DataConfig, load_dataset
from ahiq.data.distortions import TYPE_NAMES, pair_types, type_name
from ahiq.data.images import read_image
from ahiq.data.records import Pair
from ahiq.engine.baselines import baseline_scores, check_baselines, parse_baselines
from tests import fixtures_standard as fs
from tests.conftest import shared_path
from ahiq.utils.comparison import ScoredSet, comparison_report, overall_rows, type_rows
from ahiq.utils.errors import UserError
from ahiq.utils.metrics import iqa_metrics


def test_types_follow_each_datasets_naming(tmp_path):
    """Type codes from KADID/TID2013 names and CSIQ/LIVE folders; with the real label files, the published
    counts: 25 x 405, 24 x 125, CSIQ 5 x 150 + 116 contrast, LIVE 169/175/145/145/145."""
    counts = {}
    for name, build in (("kadid10k", fs.build_kadid10k), ("tid2013", fs.build_tid2013), ("csiq", fs.build_csiq),
                        ("live", fs.build_live)):
        pairs = load_dataset(DataConfig(name, str(build(tmp_path / name, images=False))))
        types = pair_types(name, pairs)
        expected = ([p.dist.name.split("_")[1] for p in pairs] if name in ("kadid10k", "tid2013")
                    else [p.dist.parent.name for p in pairs])
        assert types == expected and set(types) <= set(TYPE_NAMES[name]), name
        counts[name] = Counter(types)
    if fs.real_labels("KADID-10k"):
        assert set(counts["kadid10k"].values()) == {405} and len(counts["kadid10k"]) == 25
        assert set(counts["tid2013"].values()) == {125} and len(counts["tid2013"]) == 24
        assert counts["csiq"] == {"awgn": 150, "jpeg": 150, "jpeg2000": 150, "fnoise": 150, "blur": 150, "contrast": 116}
        assert counts["live"] == {"jp2k": 169, "jpeg": 175, "wn": 145, "gblur": 145, "fastfading": 145}
    assert type_name("kadid10k", "15") == "denoise" and type_name("tid2013", "24") == "sparse sampling and reconstruction"
    assert type_name("pipal", "03") == "03"


def test_csv_type_column_and_pipal_names(tmp_path):
    (tmp_path / "labels.csv").write_text("dist,ref,score,type\nblur\\a_1.png,r.png,3,blur\n./b.png,r.png,2,\n")
    pairs = load_dataset(DataConfig("csv", str(tmp_path)))
    assert pair_types("csv", pairs) == ["blur", None]
    pipal = [Pair(tmp_path / "A0001_03_02.bmp", tmp_path / "A0001.bmp"), Pair(tmp_path / "x.bmp", tmp_path / "A0001.bmp")]
    assert pair_types("synthetic", pipal) == ["03", None] and pair_types(None, pipal) == ["03", None]
    tid = [Pair(tmp_path / "i03_11_5.bmp", tmp_path / "I03.BMP")]
    assert pair_types(None, tid) == ["11"] and pair_types("kadid10k", tid) == [None]  # folder pairs: any <ref>_TT_L
    assert type_name("synthetic", "03") == "contrast factor brightness shift"


def _as_tensor(path) -> torch.Tensor:
    return torch.from_numpy(read_image(path)).permute(2, 0, 1)[None].float() / 255


def test_baselines_are_piqs_own_numbers_on_the_decoded_images():
    """PSNR/SSIM/GMSD on the real KADID-10k pairs equal piq called on each pair alone; GMSD (lower = better) is
    negated; PSNR is the mini set's documented RGB-PSNR (40.25, 20.47, 17.84, 20.95 dB)."""
    pairs = load_dataset(DataConfig("kadid10k", str(shared_path("data", "mini", "KADID-10k-mini"))))
    scores = baseline_scores(["psnr", "ssim", "gmsd"], pairs, batch_size=3)  # batches of 3 and 1
    for k, p in enumerate(pairs):
        x, y = _as_tensor(p.dist), _as_tensor(p.ref)
        assert scores["PSNR"][k] == pytest.approx(float(piq.psnr(x, y, data_range=1.0)), rel=1e-6)
        assert scores["SSIM"][k] == pytest.approx(float(piq.ssim(x, y, data_range=1.0)), rel=1e-6)
        assert scores["GMSD"][k] == pytest.approx(-float(piq.gmsd(x, y, data_range=1.0)), rel=1e-6)
    assert np.round(scores["PSNR"], 2).tolist() == [40.25, 20.47, 17.84, 20.95]


def test_learned_metrics_offline_say_where_the_weights_go(tmp_path, monkeypatch):
    """No silent skip: without the weight files and without a network, LPIPS/DISTS stop with one line naming
    the files, the folder torch.hub reads them from, and that online they download themselves."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub folder

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    for name, file in (("lpips", "lpips_weights.pt"), ("dists", "dists_weights.pt")):
        with pytest.raises(UserError) as err:
            check_baselines([name])
        message = str(err.value)
        assert "\n" not in message and f"{tmp_path / 'hub' / 'checkpoints'}" in message
        assert file in message and "vgg16-397923af.pth" in message and "download there themselves" in message
        assert err.value.for_cli().endswith(f"leave {name} out of --baselines ")
    with pytest.raises(UserError, match="unknown metric foo"):
        parse_baselines("psnr,foo")
    assert parse_baselines("none") == [] and parse_baselines("all")[-2:] == ["lpips", "dists"]


def test_image_too_small_for_a_metric_is_named_before_any_work(tmp_path):
    img = np.zeros((32, 40, 3), np.uint8)
    for name in ("d.png", "r.png"):
        cv2.imwrite(str(tmp_path / name), img)
    pair = Pair(tmp_path / "d.png", tmp_path / "r.png", 1.0)
    check_baselines(["psnr", "ssim"], [pair])
    with pytest.raises(UserError, match=r"d.png: 40x32 is smaller than MS-SSIM takes \(161x161"):
        check_baselines(["ms_ssim"], [pair])


def _scored(seed: int, n: int = 40) -> ScoredSet:
    rng = np.random.default_rng(seed)
    labels = rng.normal(size=n)
    types = [["01", "02", "11"][i % 3] for i in range(n)]
    return ScoredSet([f"p{i}.png" for i in range(n)], types, labels,
                     {"AHIQ": labels + rng.normal(scale=0.5, size=n), "PSNR": labels + rng.normal(scale=1.5, size=n)})


def test_tables_are_scipys_numbers_over_the_splits(tmp_path):
    sets = [_scored(0), _scored(1, 37)]
    sets[1].write(tmp_path / "s.csv")
    back = ScoredSet.read(tmp_path / "s.csv")  # exact round trip: the per-split tables read these files
    assert back.names == sets[1].names and back.types == sets[1].types and np.array_equal(back.labels, sets[1].labels)
    assert all(np.array_equal(back.scores[m], sets[1].scores[m]) for m in sets[1].scores)
    rows = type_rows(sets, TYPE_NAMES["kadid10k"])
    assert [r[:3] for r in rows] == [["01", "Gaussian blur", "13-14"], ["02", "lens blur", "12-13"],
                                     ["11", "white noise", "12-13"], ["all", "all types", "37-40"]]
    for r in rows:
        for k, metric in enumerate(("AHIQ", "PSNR")):
            per_split = [stats.spearmanr(s.scores[metric][pick], s.labels[pick])[0] for s in sets
                         for pick in [np.array([r[0] in ("all", t) for t in s.types])]]
            assert r[3 + k] == pytest.approx(np.median(per_split), abs=1e-12)
    md, table = overall_rows(sets)
    psnr = [iqa_metrics(s.scores["PSNR"], s.labels) for s in sets]
    assert md[1][:2] == ["PSNR", "37-40"] and md[1][2] == (
        f"{np.median([m['SRCC'] for m in psnr]):.4f} ({np.mean([m['SRCC'] for m in psnr]):.4f} ± "
        f"{np.std([m['SRCC'] for m in psnr]):.4f})")
    assert table[1][:4] == ["PSNR", 2, 37, 40] and float(table[1][4]) == pytest.approx(np.median([m["SRCC"] for m in psnr]))
    text = comparison_report(sets, tmp_path / "kadid", "kadid10k", TYPE_NAMES["kadid10k"], "dmos")
    assert "| AHIQ | 37-40 |" in text and "| 02 | lens blur | 12-13 |" in text
    assert (tmp_path / "kadid_comparison.md").read_text() == text
    for suffix in ("_comparison.csv", "_types.csv", "_scatter.png", "_types.png"):
        assert (tmp_path / f"kadid{suffix}").stat().st_size > 0


def test_standard_splits_with_baselines(kadid_tree, tmp_path, capsys):
    """standard.py --seeds 2 --baselines psnr,ssim: AHIQ, PSNR and SSIM rows and a per-type table; PSNR/SSIM are
    piq's own numbers on each split's test pairs, AHIQ's are test.py's, SRCC rows are scipy's over those pairs."""
    from experiments import standard
    from tests.conftest import TINY_ARGS

    table = standard.main([
        "--dataset", "kadid10k", "--data_root", str(kadid_tree), "--seeds", "2", "--split_ratio", "3:1:2",
        "--test_crops", "center", "--checkpoints_dir", str(tmp_path), "--crop_size", "32", "--batch_size", "4",
        "--n_epoch", "1", "--max_steps", "2", "--pretrained_backbones", "false", "--device", "cpu",
        "--val_crops", "center", "--progress", "false", "--baselines", "psnr,ssim", *TINY_ARGS])
    assert table in capsys.readouterr().out and (tmp_path / "kadid10k_splits.md").read_text() == table
    sets, piq_srcc = [], {"PSNR": [], "SSIM": []}
    for seed in (0, 1):
        run = tmp_path / f"kadid10k_split{seed}"
        scored = ScoredSet.read(run / "test_results_baselines.csv")
        ahiq = [float(line.split(",")[1]) for line in (run / "test_results.txt").read_text().splitlines()]
        assert scored.names == [line.split(",")[0] for line in (run / "test_results.txt").read_text().splitlines()]
        assert np.allclose(scored.scores["AHIQ"], ahiq, atol=1e-6)
        for name, psnr, ssim in zip(scored.names, scored.scores["PSNR"], scored.scores["SSIM"]):
            x, y = _as_tensor(kadid_tree / "images" / name), _as_tensor(kadid_tree / "images" / f"{name[:3]}.png")
            assert psnr == pytest.approx(float(piq.psnr(x, y, data_range=1.0)), rel=1e-6)
            assert ssim == pytest.approx(float(piq.ssim(x, y, data_range=1.0)), rel=1e-6)
        for metric in piq_srcc:
            piq_srcc[metric].append(stats.spearmanr(scored.scores[metric], scored.labels)[0])
        sets.append(scored)
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in table.splitlines() if line.startswith("| ")}
    assert {"AHIQ", "PSNR", "SSIM"} <= set(rows)
    for metric, values in piq_srcc.items():
        assert rows[metric][2].startswith(f"{np.median(values):.4f} ({np.mean(values):.4f} ± ")
    assert "kadid10k (2 splits, test parts): SRCC per distortion type (median over the splits)" in table
    assert rows["01"][1] == "Gaussian blur" and rows["11"][1] == "white noise" and rows["10"][1] == "JPEG"
    blur = [stats.spearmanr(s.scores["PSNR"][[t == "01" for t in s.types]], s.labels[[t == "01" for t in s.types]])[0]
            for s in sets]
    header = next(line for line in table.splitlines() if line.startswith("| type |")).split(" | ")
    assert rows["01"][header.index("PSNR")].rstrip(" |") == f"{np.median(blur):.4f}"
    for suffix in ("_comparison.md", "_comparison.csv", "_types.csv", "_scatter.png", "_types.png"):
        assert (tmp_path / f"kadid10k{suffix}").is_file()


def test_offline_learned_metric_stops_standard_before_training(tmp_path, monkeypatch, capsys):
    from experiments import standard
    from tests.conftest import run_main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    proc = run_main(standard.main, ["--dataset", "kadid10k", "--data_root", str(tmp_path), "--seeds", "1",
                                    "--checkpoints_dir", str(tmp_path / "runs"), "--baselines", "psnr,dists"], capsys)
    assert proc.returncode == 2 and not (tmp_path / "runs").exists()
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: dists: piq could not load its weights")
    assert "leave dists out of --baselines" in proc.stderr
