"""PIPAL as distributed (``Train_Ref/``, ``Train_Dis/`` or ``Distortion_1..4/``, ``Train_Label/*.txt`` or one list
file), and labelled or unlabelled folder pairs in its naming (NTIRE valid/test). Scores are Elo ratings, higher = better."""
from __future__ import annotations

from pathlib import Path

from ahiq.data.images import References, by_name_key, list_images, match_folder, name_key, note_skipped, reference_name
from ahiq.data.records import Pair
from ahiq.data.labels import check_new, images_by_key, label_lines, parse_number
from ahiq.utils.errors import UserError, arg


def read_label_list(path: Path) -> list[tuple[str, float, str]]:
    """``(name, score, file:line)`` per line ``name,score`` of a PIPAL list file, blank lines skipped."""
    rows, seen = [], {}
    for number, line in enumerate(label_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        fields = [f.strip() for f in line.split(",")]  # PIPAL's names hold no comma
        if len(fields) != 2 or not fields[0]:
            raise UserError(f"{where}: expected 'name,score', found {line.strip()!r}; correct or delete that line")
        check_new(seen, name_key(fields[0]), number, where, fields[0])
        rows.append((fields[0], parse_number(fields[1], where, "score"), where))
    return rows


def _pairs(rows, dists: dict[str, Path], folders: list[Path], ref_dir: Path) -> list[Pair]:
    """A pair per label row; a missing distorted image is named in its reference's other images' folder."""
    refs = References(ref_dir, images_by_key(ref_dir).values())
    home = {name_key(reference_name(name)): path.parent for name, path in sorted(dists.items(), reverse=True)}
    pairs = []
    for name, score, where in rows:
        ref = refs.find(name, where=where) or ref_dir / f"{reference_name(name)}.bmp"
        dist = dists.get(name_key(name), home.get(name_key(reference_name(name)), folders[0]) / name)
        pairs.append(Pair(dist=dist, ref=ref, score=score, raw=score))
    return sorted(pairs, key=lambda p: p.dist.name)


def load_pipal_train(root: Path, label_list: Path | None = None) -> list[Pair]:
    """Labelled pairs of the PIPAL training set: ``Train_Label/*.txt`` or one ``label_list`` file."""
    if not (root / "Train_Ref").is_dir():
        raise UserError(f"{root}: no Train_Ref/ folder; give {arg('data_root')}the PIPAL training folder")
    if label_list is not None:
        rows = read_label_list(label_list)
    else:
        files = sorted((root / "Train_Label").glob("*.txt"))
        if not files:
            raise UserError(f"{root / 'Train_Label'}: no label files; give the PIPAL training folder or "
                            f"{arg('train_list')}FILE")
        rows = [row for f in files for row in read_label_list(f)]
        first: dict[str, str] = {}
        for name, _score, where in rows:
            if (earlier := first.setdefault(name_key(name), where)) != where:
                raise UserError(f"{where}: {name} is labelled again (first at {earlier}); delete one of the lines")
    parts = [root / "Train_Dis"] if (root / "Train_Dis").is_dir() else sorted(
        p for p in root.glob("Distortion_*") if p.is_dir())
    if not parts:
        raise UserError(f"{root}: no Train_Dis/ or Distortion_1..4/ folder; give {arg('data_root')}the PIPAL "
                        "training folder (the one holding Train_Ref/)")
    dists = by_name_key((p for part in parts for p in images_by_key(part).values()), root)
    return _pairs(rows, dists, parts, root / "Train_Ref")


def load_folder_pairs(ref_dir: Path, dist_dir: Path, labels: Path | None = None) -> list[Pair]:
    """Pairs of a reference and a distorted folder, labelled by ``labels``, else every image with ``score=None``."""
    for folder, flag in ((ref_dir, "reference"), (dist_dir, "distorted")):
        if not folder.is_dir():
            raise UserError(f"{folder}: {flag} folder not found")
    images, skipped = list_images(dist_dir)
    note_skipped(dist_dir, skipped)
    if labels is not None:
        return _pairs(read_label_list(labels), by_name_key(images, dist_dir), [dist_dir], ref_dir)
    # a distorted image without a reference gets the path the naming rule looks for (screening reports it)
    pairs = [Pair(dist=d, ref=ref or ref_dir / f"{reference_name(d.name)}{d.suffix}")
             for d, ref in match_folder(ref_dir, images)]
    if not pairs:
        raise UserError(f"{dist_dir}: no distorted images")
    return sorted(pairs, key=lambda p: p.dist.name)
