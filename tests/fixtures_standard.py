"""Build TID2013, KADID-10k, CSIQ and LIVE trees in their distributed layouts, with tiny generated images.

Names and scores come from the real label files in ``<shared>/data/labels`` (``$AHIQ_SHARED``, else
``../shared``) when that folder is there, else from a few real lines written out below. The folder layouts
and file-name rules here are written independently of ``data/standard.py`` so that the tests compare two
statements of the release.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tests.conftest import SHARED

LABELS = SHARED / "data" / "labels"
KADID_MINI = SHARED / "data" / "mini" / "KADID-10k-mini"

# A few real lines of each label file (copied from ../shared/data/labels) for a checkout without ../shared.
_TID2013_FALLBACK = [
    ("5.51429", "I01_01_1.bmp"), ("5.56757", "i01_01_2.bmp"), ("5.91429", "I01_11_1.BMP"),
    ("5.45946", "I01_13_1.BMP"), ("5.91667", "I02_11_1.BMP"), ("5.14286", "I25_01_1.bmp"),
    ("6.08571", "I25_11_1.BMP"), ("2.77143", "i25_24_5.bmp"),
]
_KADID_FALLBACK = [
    ("I01_01_02.png", "I01.png", "4.33", "0.869"), ("I01_01_05.png", "I01.png", "1.1", "0.3"),
    ("I01_06_05.png", "I01.png", "2.27", "0.929"), ("I01_15_05.png", "I01.png", "1.33", "0.471"),
    ("I02_03_04.png", "I02.png", "1.8", "0.542"), ("I81_01_01.png", "I81.png", "4.67", "0.537"),
    ("I81_24_05.png", "I81.png", "1.37", "0.547"),
]
# (image, dst_idx, dst_type, dst_lev, dmos_std, dmos) as in the sheet all_by_image.
_CSIQ_FALLBACK = [
    ("1600", "1", "noise", "1", "0.061", "0.062"), ("1600", "1", "noise", "2", "0.097", "0.206"),
    ("1600", "2", "jpeg", "1", "0.004", "0.013"), ("1600", "3", "jpeg2000", "1", "0.002", "0.012"),
    ("1600", "4", "fnoise", "1", "0.042", "0.052"), ("1600", "5", "blur", "1", "0.053", "0.043"),
    ("1600", "6", "contrast", "1", "0.046", "0.056"), ("aerial_city", "1", "noise", "1", "0.014", "0.032"),
    ("aerial_city", "1", "noise", "2", "0.082", "0.125"), ("woman", "6", "contrast", "4", "0.226", "0.469"),
]
# The release's own folder and file-name token for each sheet dst_type (1600.AWGN.1.png in dst_imgs/awgn/).
CSIQ_RELEASE_NAMES = {
    "noise": ("awgn", "AWGN"), "jpeg": ("jpeg", "JPEG"), "jpeg2000": ("jpeg2000", "jpeg2000"),
    "fnoise": ("fnoise", "fnoise"), "blur": ("blur", "BLUR"), "contrast": ("contrast", "contrast"),
}
LIVE_FOLDER_COUNTS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))
_LIVE_FALLBACK_HEAD = [  # the first real entries; the rest of the 982 are made up (see live_rows)
    ("0.000000", "jp2k/img1.bmp", "buildings.bmp"), ("28.003845", "jp2k/img2.bmp", "studentsculpture.bmp"),
    ("34.010736", "jp2k/img3.bmp", "rapids.bmp"), ("65.131410", "jp2k/img4.bmp", "dancers.bmp"),
    ("68.911340", "jp2k/img5.bmp", "churchandcapitol.bmp"),
]
_LIVE_REFS = (
    "bikes", "building2", "buildings", "caps", "carnivaldolls", "cemetry", "churchandcapitol",
    "coinsinfountain", "dancers", "flowersonih35", "house", "lighthouse", "lighthouse2", "manfishing",
    "monarch", "ocean", "paintedhouse", "parrots", "plane", "rapids", "sailing1", "sailing2", "sailing3",
    "sailing4", "statue", "stream", "studentsculpture", "woman", "womanhat",
)


def real_labels(name: str) -> Path | None:
    """The real label folder ``<shared>/data/labels/<name>``, or None when the shared folder is absent."""
    folder = LABELS / name
    return folder if folder.is_dir() else None


def _tiny_image_bytes(suffix: str) -> bytes:
    # One encoded 32x32 image (the smallest crop) written under every name: writing bytes is ten times
    # faster than encoding thousands of images, and the data check accepts it.
    pixels = (np.arange(32 * 32 * 3) % 251).astype(np.uint8).reshape(32, 32, 3)
    ok, data = cv2.imencode(suffix, pixels)
    assert ok, suffix
    return data.tobytes()


def write_images(paths: list[Path]) -> None:
    """Write a tiny valid image at each path (format from the suffix), creating folders."""
    cache: dict[str, bytes] = {}
    for folder in {p.parent for p in paths}:
        folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        suffix = path.suffix.lower()
        if suffix not in cache:
            cache[suffix] = _tiny_image_bytes(suffix)
        path.write_bytes(cache[suffix])


def tid2013_rows() -> list[tuple[str, ...]]:
    """``(mos text, name)`` of mos_with_names.txt: all 3,000 real lines, or the fallback handful."""
    folder = real_labels("TID2013")
    if folder is None:
        return list(_TID2013_FALLBACK)
    lines = (folder / "mos_with_names.txt").read_text().splitlines()
    return [tuple(line.split()) for line in lines if line.strip()]


def build_tid2013(root: Path, rows: list[tuple[str, ...]] | None = None, images: bool = True) -> Path:
    """TID2013 as released: CRLF ``mos_with_names.txt``, ``I01.BMP``..``I24.BMP`` + ``i25.bmp``, lower-case dists."""
    rows = tid2013_rows() if rows is None else rows
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "mos_with_names.txt", "w", newline="") as f:
        f.writelines(" ".join(row) + "\r\n" for row in rows)
    if images:
        refs = {row[1].split("_")[0].lower() for row in rows}
        ref_names = [r.upper() + ".BMP" if r != "i25" else "i25.bmp" for r in sorted(refs)]
        write_images([root / "reference_images" / n for n in ref_names]
                     + [root / "distorted_images" / row[1].lower() for row in rows])
    return root


def kadid10k_rows() -> list[tuple[str, ...]]:
    """``(dist_img, ref_img, dmos, var)`` text of dmos.csv: all 10,125 real rows, or the fallback handful."""
    folder = real_labels("KADID-10k")
    if folder is None:
        return list(_KADID_FALLBACK)
    lines = (folder / "dmos.csv").read_text().splitlines()[1:]
    return [tuple(line.split(",")) for line in lines if line.strip()]


def build_kadid10k(root: Path, rows: list[tuple[str, ...]] | None = None, images: bool = True) -> Path:
    """KADID-10k as released: ``dmos.csv`` with its header, references and distorted images in ``images/``."""
    rows = kadid10k_rows() if rows is None else rows
    root.mkdir(parents=True, exist_ok=True)
    text = "dist_img,ref_img,dmos,var\n" + "".join(",".join(row) + "\n" for row in rows)
    (root / "dmos.csv").write_text(text)
    if images:
        names = {row[0] for row in rows} | {row[1] for row in rows}
        write_images([root / "images" / n for n in sorted(names)])
    return root


def csiq_rows() -> list[tuple[str, ...]]:
    """``(image, dst_idx, dst_type, dst_lev, dmos_std, dmos)`` text: all 866 real rows, or the fallback ten."""
    folder = real_labels("CSIQ")
    if folder is None:
        return list(_CSIQ_FALLBACK)
    lines = (folder / "all_by_image_columns_D_to_I.txt").read_text().splitlines()
    return [tuple(line.split("\t")) for line in lines if line.strip()]


def csiq_release_paths(image: str, dst_type: str, dst_lev: str) -> tuple[str, str]:
    """``(ref, dist)`` paths relative to the CSIQ root, as the release names them."""
    folder, token = CSIQ_RELEASE_NAMES[dst_type]
    return f"src_imgs/{image}.png", f"dst_imgs/{folder}/{image}.{token}.{dst_lev}.png"


def _sheet_value(text: str) -> int | float | str:
    # Excel stores the image name 1600, the indices and the scores as numbers, as the release does;
    # text that is no number stays text, so tests can plant bad cells.
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def build_csiq(root: Path, rows: list[tuple[str, ...]] | None = None, images: bool = True) -> Path:
    """CSIQ as released: ``csiq.DMOS.xlsx`` (header below a title, table in columns D..I), src/dst images."""
    import openpyxl

    rows = csiq_rows() if rows is None else rows
    root.mkdir(parents=True, exist_ok=True)
    book = openpyxl.Workbook()
    book.active.title = "notes"  # another sheet first, so the loader must pick all_by_image by name
    book.active["A1"] = "CSIQ subjective scores"
    sheet = book.create_sheet("all_by_image")
    sheet["D1"] = "DMOS by image"
    header_row = 3
    for col, name in enumerate(("image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"), 4):
        sheet.cell(header_row, col, name)
    for r, (image, idx, kind, lev, std, dmos) in enumerate(rows, header_row + 1):
        for col, text in enumerate((image, idx, kind, lev, std, dmos), 4):
            sheet.cell(r, col, _sheet_value(text))
    book.save(root / "csiq.DMOS.xlsx")
    if images:
        paths = {p for image, _, kind, lev, _, _ in rows for p in csiq_release_paths(image, kind, lev)}
        write_images([root / p for p in sorted(paths)])
    return root


def live_rows() -> list[tuple[str, str, str]]:
    """``(dmos text, folder/imgN.bmp, ref name)`` for all 982 entries in dmos.mat order (copies have dmos 0).

    From the real dmos_name_ref.txt when present; otherwise the first real entries followed by made-up
    ones (every fourth a reference copy), since the release fixes all 982 positions.
    """
    folder = real_labels("LIVE")
    if folder is not None:
        lines = (folder / "dmos_name_ref.txt").read_text().splitlines()
        return [tuple(f.strip() for f in line.split("\t")) for line in lines if line.strip()]  # type: ignore[misc]
    rows = list(_LIVE_FALLBACK_HEAD)
    index = 0
    for name, count in LIVE_FOLDER_COUNTS:
        for k in range(1, count + 1):
            if index >= len(rows):
                dmos = "0.000000" if index % 4 == 0 else f"{20 + (index * 37) % 60:.6f}"
                rows.append((dmos, f"{name}/img{k}.bmp", _LIVE_REFS[index % len(_LIVE_REFS)] + ".bmp"))
            index += 1
    return rows


def build_live(root: Path, rows: list[tuple[str, str, str]] | None = None, images: bool = True) -> Path:
    """LIVE release 2: ``dmos.mat`` (dmos, orgs as 1x982), ``refnames_all.mat`` (1x982 cell), refimgs/, folders."""
    import scipy.io

    rows = live_rows() if rows is None else rows
    root.mkdir(parents=True, exist_ok=True)
    dmos = np.array([[float(d) for d, _, _ in rows]])
    orgs = (dmos == 0).astype(np.float64)  # the release marks its reference copies with orgs = 1 and DMOS 0
    names = np.empty((1, len(rows)), dtype=object)  # an object array is saved as a MATLAB cell array
    for i, (_, _, ref) in enumerate(rows):
        names[0, i] = ref
    scipy.io.savemat(root / "dmos.mat", {"dmos": dmos, "orgs": orgs})
    scipy.io.savemat(root / "refnames_all.mat", {"refnames_all": names})
    if images:
        write_images([root / "refimgs" / r for r in sorted({ref for _, _, ref in rows})]
                     + [root / dist for _, dist, _ in rows])
    return root

