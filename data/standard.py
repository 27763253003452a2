"""Loaders for TID2013, KADID-10k, CSIQ and LIVE release 2 as distributed: every labelled pair from the label files,
sorted (a missing image still yields its pair, for the data check); ``score`` higher = better, ``raw`` as written."""
from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ahiq.data.images import References, name_key, reference_name
from ahiq.data.labels import check_new, csv_rows, images_by_key, label_lines, need_file, parse_number
from ahiq.data.records import Pair
from ahiq.utils.errors import UserError

_TID2013_NAME = re.compile(r"^i\d\d_\d\d_\d\.bmp$", re.IGNORECASE)

# CSIQ ``dst_type`` in csiq.DMOS.xlsx -> (folder under dst_imgs/, type token in the file name).
_CSIQ_TYPES: dict[str, tuple[str, str]] = {
    "noise": ("awgn", "AWGN"), "jpeg": ("jpeg", "JPEG"), "jpeg2000": ("jpeg2000", "jpeg2000"),
    "fnoise": ("fnoise", "fnoise"), "blur": ("blur", "BLUR"), "contrast": ("contrast", "contrast")}
_CSIQ_COLUMNS = ("image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos")

# LIVE release 2 numbers the images of each folder img1..imgN; dmos.mat concatenates the folders in this order.
LIVE_FOLDERS: tuple[tuple[str, int], ...] = (
    ("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))
LIVE_ENTRIES = sum(count for _, count in LIVE_FOLDERS)  # 982, reference copies included


def load_tid2013(root: Path) -> list[Pair]:
    """Pairs of TID2013: ``mos_with_names.txt`` (``<mos> <name>``), ``reference_images/``, ``distorted_images/``;
    score = raw = MOS (0..9)."""
    labels = root / "mos_with_names.txt"
    dist_dir, ref_dir = root / "distorted_images", root / "reference_images"
    dists = images_by_key(dist_dir)
    refs = References(ref_dir, images_by_key(ref_dir).values())
    pairs, seen = [], {}
    for number, line in enumerate(label_lines(labels), 1):
        where = f"{labels}:{number}"
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise UserError(f"{where}: expected '<mos> <name>', found {len(fields)} fields; "
                            "correct or delete that line")
        mos = parse_number(fields[0], where, "MOS")
        name = fields[1]
        if not _TID2013_NAME.match(name):
            raise UserError(f"{where}: {name!r} is not a TID2013 name like i01_01_1.bmp; correct or delete that line")
        check_new(seen, name_key(name), number, where, name)
        # Unmatched names keep the label's spelling: the checker reports the path the label asked for.
        dist = dists.get(name_key(name), dist_dir / name)
        ref = refs.find(name, where=where) or ref_dir / f"{reference_name(name)}{Path(name).suffix}"
        pairs.append(Pair(dist=dist, ref=ref, score=mos, raw=mos))
    return sorted(pairs, key=lambda p: p.dist)


def load_kadid10k(root: Path) -> list[Pair]:
    """Pairs of KADID-10k: ``dmos.csv`` naming files in ``images/``; score = raw = dmos (1..5 ACR, higher = better)."""
    labels, images = root / "dmos.csv", root / "images"
    pairs, seen = [], {}
    for number, row in csv_rows(labels, ("dist_img", "ref_img", "dmos")):
        where = f"{labels}:{number}"
        dist_name, ref_name = row["dist_img"], row["ref_img"]
        if not dist_name or not ref_name:
            raise UserError(f"{where}: empty image name; correct or delete that line")
        dmos = parse_number(row["dmos"], where, "dmos")
        check_new(seen, dist_name, number, where, dist_name)
        pairs.append(Pair(dist=images / dist_name, ref=images / ref_name, score=dmos, raw=dmos))
    return sorted(pairs, key=lambda p: p.dist)


def _cell_text(value: object) -> str:
    """A spreadsheet cell as the text it stands for (Excel stores 1600 and level 1 as numbers)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value).strip()


def _csiq_header(texts: list[str]) -> dict[str, int] | None:
    """Column index of each CSIQ column if this sheet row is the table's header (not row 1), else None."""
    lower = [t.lower() for t in texts]
    for start in range(len(lower) - len(_CSIQ_COLUMNS) + 1):
        if tuple(lower[start:start + len(_CSIQ_COLUMNS)]) == _CSIQ_COLUMNS:
            return {c: start + k for k, c in enumerate(_CSIQ_COLUMNS)}
    if all(c in lower for c in _CSIQ_COLUMNS):
        return {c: lower.index(c) for c in _CSIQ_COLUMNS}
    return None


def _csiq_sheet(labels: Path):
    """Sheet ``all_by_image`` of the CSIQ workbook (openpyxl, imported here: only CSIQ needs it)."""
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    need_file(labels, "label file")
    try:
        book = openpyxl.load_workbook(labels, data_only=True)  # data_only: cached values, not formulas
    except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError, OSError):  # kinds of damage
        raise UserError(f"{labels}: cannot read as .xlsx; give the workbook as distributed") from None
    if "all_by_image" not in book.sheetnames:
        raise UserError(f"{labels}: no sheet 'all_by_image' (sheets: {', '.join(book.sheetnames)}); "
                        "give the workbook as distributed")
    return book["all_by_image"]


def load_csiq(root: Path) -> list[Pair]:
    """Pairs of CSIQ: ``csiq.DMOS.xlsx`` sheet ``all_by_image``, ``src_imgs/``,
    ``dst_imgs/<folder>/<image>.<TOKEN>.<level>.png``; score = 1 - dmos, raw = dmos (0..1, lower = better)."""
    labels = root / "csiq.DMOS.xlsx"
    sheet = _csiq_sheet(labels)
    columns: dict[str, int] | None = None
    pairs, seen = [], {}
    for number, cells in enumerate(sheet.iter_rows(min_row=1, values_only=True), 1):
        where = f"{labels}:{number}"
        texts = [_cell_text(v) for v in cells]
        if columns is None:
            columns = _csiq_header(texts)
            continue
        image, kind, level, dmos_text = (texts[columns[c]] for c in ("image", "dst_type", "dst_lev", "dmos"))
        if not (image or kind or level or dmos_text):
            continue
        if not image:
            raise UserError(f"{where}: no image name; correct or delete that row")
        key = re.sub(r"\s+", "", kind.lower())  # the distributed sheet writes "jpeg 2000"
        if key not in _CSIQ_TYPES:
            raise UserError(f"{where}: unknown dst_type {kind!r} (known: {', '.join(sorted(_CSIQ_TYPES))}); "
                            "correct or delete that row")
        if not level.isdigit():
            raise UserError(f"{where}: dst_lev {level!r} is not a whole number; correct or delete that row")
        dmos = parse_number(cells[columns["dmos"]], where, "dmos")
        folder, token = _CSIQ_TYPES[key]
        name = f"{image}.{token}.{int(level)}.png"
        check_new(seen, name, number, where, name)
        pairs.append(Pair(dist=root / "dst_imgs" / folder / name, ref=root / "src_imgs" / f"{image}.png",
                          score=1.0 - dmos, raw=dmos))
    if columns is None:
        raise UserError(f"{labels}: sheet all_by_image has no header row with {', '.join(_CSIQ_COLUMNS)}; "
                        "give the workbook as distributed")
    return sorted(pairs, key=lambda p: p.dist)


def _mat_variables(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named variables of a MATLAB file, each flattened to 1-D."""
    import scipy.io  # only LIVE needs it
    from scipy.io.matlab import MatReadError

    need_file(path, "label file")
    try:
        mat = scipy.io.loadmat(str(path))
    except NotImplementedError:  # scipy reads v4-v7.2 files only
        raise UserError(f"{path}: MATLAB v7.3 (HDF5) file; save it with -v7 or give the file as distributed") from None
    except (MatReadError, ValueError, TypeError, OSError):  # kinds of damage
        raise UserError(f"{path}: cannot read as a MATLAB .mat file; give the file as distributed") from None
    missing = [n for n in names if n not in mat]
    if missing:
        present = ", ".join(k for k in mat if not k.startswith("__"))
        raise UserError(f"{path}: no variable {', '.join(missing)} (holds: {present}); give the file as distributed")
    return {n: np.asarray(mat[n]).ravel() for n in names}


def _mat_string(value: object) -> str:
    """A MATLAB cell entry loaded by scipy (a 1-element array of str) as a plain string."""
    while isinstance(value, np.ndarray):
        if value.size != 1:
            return ""
        value = value.ravel()[0]
    return str(value).strip()


def load_live(root: Path) -> list[Pair]:
    """Pairs of LIVE release 2: ``dmos.mat``, ``refnames_all.mat``, ``refimgs/``, the :data:`LIVE_FOLDERS` (reference
    copies, ``orgs == 1``, left out); score = 100 - dmos, raw = dmos (about 0..100, lower = better)."""
    dmos_file, names_file = root / "dmos.mat", root / "refnames_all.mat"
    values = _mat_variables(dmos_file, ("dmos", "orgs"))
    refnames = _mat_variables(names_file, ("refnames_all",))["refnames_all"]
    for file, var, array in ((dmos_file, "dmos", values["dmos"]), (dmos_file, "orgs", values["orgs"]),
                             (names_file, "refnames_all", refnames)):
        if array.size != LIVE_ENTRIES:
            raise UserError(f"{file}: {var} has {array.size} entries, LIVE release 2 has {LIVE_ENTRIES}; "
                            "give the release-2 files as distributed")
    dmos_values, orgs_values = values["dmos"].tolist(), values["orgs"].tolist()
    pairs: list[Pair] = []
    index = 0
    for folder, count in LIVE_FOLDERS:
        for k in range(1, count + 1):
            where = f"{dmos_file}: entry {index + 1}"
            orgs = parse_number(orgs_values[index], where, "orgs")
            if orgs not in (0.0, 1.0):
                raise UserError(f"{where}: orgs is {orgs:g}, expected 0 or 1; give the file as distributed")
            if orgs == 0.0:
                dmos = parse_number(dmos_values[index], where, "dmos")
                ref_name = _mat_string(refnames[index])
                if not ref_name:
                    raise UserError(f"{names_file}: entry {index + 1}: refnames_all is not a file name; "
                                    "give the file as distributed")
                pairs.append(Pair(dist=root / folder / f"img{k}.bmp", ref=root / "refimgs" / ref_name,
                                  score=100.0 - dmos, raw=dmos))
            index += 1
    return sorted(pairs, key=lambda p: p.dist)


LOADERS: dict[str, Callable[[Path], list[Pair]]] = {
    "tid2013": load_tid2013, "kadid10k": load_kadid10k, "csiq": load_csiq, "live": load_live}
