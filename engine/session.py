"""One scoring session (score.py, test.py, the experiments, validation): open the checkpoint and screen the pairs
once, guard the outputs, build the model, score; with an output file, a journal beside it lets a stopped run
continue with the same bytes.
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from ahiq.data.crops import parse_crops
from ahiq.data.images import read_image
from ahiq.data.records import Pair
from ahiq.data.screening import DecodedImages, screen_pairs
from ahiq.engine.config import ScoreConfig
from ahiq.engine.device import RunContext, describe_precision, setup_run
from ahiq.engine.scoring import PairScore, load_seeded, plan, score_stream
from ahiq.models.ahiq import AHIQ
from ahiq.models.weights import file_sha256
from ahiq.models.checkpoint import open_checkpoint, resolve_checkpoint
from ahiq.utils.errors import Stopped, UserError, arg, note
from ahiq.utils.io import (MAX_NAME, check_outputs, check_writable, lock_file, map_file_names, unlock_file,
                           write_target)
from ahiq.utils.visual import save_quality_map


class ScoringSession:
    """``screen`` -> ``guard`` -> ``score`` (the model built on first use), in a ``with`` block."""

    def __init__(self, cfg: ScoreConfig, ctx: RunContext | None = None, outputs: dict[str, str | None] | None = None):
        self.cfg = cfg
        self.outputs = {f"{arg('output')}": cfg.output, **(outputs or {})}
        for what, path in self.outputs.items():
            check_writable(path, what)
        check_writable(cfg.save_maps, f"{arg('save_maps')}", folder=True)
        self.ctx = ctx or setup_run(cfg.run.device)
        # One run per output at a time (rank 0 holds the lock for all ranks): a second stops here, naming the first.
        self.journaled = bool(cfg.output) and not write_target(cfg.output)[1]
        self.lock = lock_file(f"{cfg.output}.lock", f"{arg('output')}{cfg.output}: another run is writing it",
                              "wait for it to end, or give another output") if self.journaled and self.ctx.main else None
        try:
            self.checkpoint = resolve_checkpoint(cfg.checkpoint)
            self.contents, self.record = open_checkpoint(self.checkpoint)
            self.crop_size = self.record.crop(cfg.crop_size)
            parse_crops(cfg.crops)
        except BaseException:
            self.close()
            raise
        self.images = DecodedImages(max_pixels=cfg.run.max_pixels) if cfg.run.num_workers == 0 else None
        self.read = functools.partial(read_image, max_pixels=cfg.run.max_pixels)  # within the pixel budget
        self._model: AHIQ | None = None

    def __enter__(self) -> "ScoringSession":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        if self.lock is not None:
            unlock_file(self.lock)
            self.lock = None

    def screen(self, pairs: list[Pair], known: Iterable[str] = (), check_hint: bool = True) -> list[Pair]:
        """The usable pairs (every image decoded once; problems stop the run, or are skipped with ``skip_bad``)."""
        report = None if self.ctx.main else (lambda line: None)
        return screen_pairs(pairs, self.crop_size, self.cfg.skip_bad, list(known), report=report, keep=self.images,
                            max_pixels=self.cfg.run.max_pixels, check_hint=check_hint)

    def guard(self, pairs: list[Pair], names: list[str], outputs: dict[str, str | None] | None = None,
              inputs: Iterable[str | Path] = ()) -> None:
        """Before any model is built: no output is an input or another output."""
        cfg = self.cfg
        outputs = {**self.outputs, **(outputs or {})}
        inputs = [*inputs, *(p for pair in pairs for p in (pair.dist, pair.ref))]
        inputs += [p for p in (self.checkpoint, cfg.vit_weights, cfg.cnn_weights) if p]
        if self.journaled:
            outputs.update({f"{arg('output')}{cfg.output}: its journal ": Path(f"{cfg.output}.journal"),
                            f"{arg('output')}{cfg.output}: its lock ": Path(f"{cfg.output}.lock")})
        if cfg.save_maps:
            self.map_files = [Path(cfg.save_maps) / f for f in map_file_names(names, ".png")]
            too_long = next((f for f in self.map_files if len(f.name.encode()) > MAX_NAME), None)
            if too_long is not None:
                raise UserError(f"{arg('save_maps')}{cfg.save_maps}: the map name {too_long.name} is too long for "
                                "the file system; shorten the image names")
            outputs.update({f"{arg('save_maps')}{cfg.save_maps}: its map ": f for f in self.map_files})
        check_outputs(outputs, inputs)

    @property
    def model(self) -> AHIQ:
        if self._model is None:
            cfg = self.cfg
            self._model = load_seeded(self.checkpoint, self.ctx.device, cfg.run.seed, vit_weights=cfg.vit_weights,
                                      cnn_weights=cfg.cnn_weights, pretrained_backbones=cfg.pretrained_backbones,
                                      contents=self.contents, **cfg.overrides)
            if cfg.run.compile:
                for part in (self._model.vit, self._model.cnn, self._model.deform_net, self._model.regressor):
                    if part is not None:
                        part.compile()
        return self._model

    def describe(self) -> str:
        """The run's header: checkpoint, backbones, crops, device, precision."""
        model, cfg = self.model, self.cfg
        backbones = "; ".join(f"{part} {source.describe()}" for part, source in model.backbone_sources.items())
        return (f"checkpoint={self.checkpoint or 'none (RANDOM heads)'}; backbones: {backbones}; crops={cfg.crops} "
                f"crop_size={self.crop_size}; device={self.ctx.device} precision="
                f"{describe_precision(cfg.run.precision, self.ctx.device)}"
                + (f"; {self.ctx.world_size} ranks" if self.ctx.world_size > 1 else ""))

    def settings(self) -> dict:
        """What defines the scores, as the journal records it."""
        cfg, model = self.cfg, self.model
        return {"checkpoint_sha256": file_sha256(self.checkpoint) if self.checkpoint else None,
                "model": model.config.to_dict(), "crops": cfg.crops, "crop_size": self.crop_size,
                "batch_size": cfg.batch_size,  # how crops are batched decides their last bits
                "seed": cfg.run.seed, "precision": cfg.run.precision, "flip_tta": cfg.flip_tta,
                "backbones": {k: asdict(v) for k, v in model.backbone_sources.items()}}

    def score(self, pairs: list[Pair], names: list[str]) -> dict[int, float] | None:
        """``{pair index: score}`` on rank 0, None on the other ranks; maps (named ``names``) saved as pairs complete."""
        cfg, ctx = self.cfg, self.ctx
        try:
            journal = Journal(cfg.output, ctx, self.settings()) if self.journaled else None
            before, changed = journal.reusable(pairs) if journal else ({}, 0)
            if cfg.save_maps:  # a resume that adds --save_maps: the pairs without their map are scored again
                without = [i for i in before if not self.map_files[i].is_file()]
                before = {i: s for i, s in before.items() if i not in without}
            if journal and journal.done and ctx.main:
                again = [f"{changed} scored again: their files changed since"] if changed else []
                again += [f"{len(without)} scored again for their missing maps"] if cfg.save_maps and without else []
                note(f"resume: {len(before)} of {len(pairs)} pair(s) already scored in {journal.path}"
                     + "".join(f"; {a}" for a in again))

            def each(i: int, result: PairScore) -> None:
                if cfg.save_maps and i not in before:
                    self._save_map(result, self.map_files[i], names[i])
                if journal and i not in before:
                    journal.add(pairs[i], result.score)
                ctx.check()

            scores = predict(self.model, pairs, ctx, crops=cfg.crops, crop_size=self.crop_size, seed=cfg.run.seed,
                             batch_size=cfg.batch_size, precision=cfg.run.precision, num_workers=cfg.run.num_workers,
                             flip_tta=cfg.flip_tta, with_maps=bool(cfg.save_maps), each=each, progress=cfg.progress,
                             done=before, read=self.images.take if self.images is not None else self.read)
            if journal:
                journal.close()
            return scores if ctx.main else None
        except Stopped:
            raise
        except BaseException as err:  # the others must not wait for this rank
            ctx.fail(str(err) if isinstance(err, UserError) else type(err).__name__)
            if isinstance(err, UserError):
                err.rank_specific = True  # found here only: this rank says it (cli_main)
            raise
        finally:
            if cfg.run.num_workers == 0:
                self.images = None

    def _save_map(self, result: PairScore, path: Path, name: str) -> None:
        random = " (RANDOM weights: not meaningful)" if self.checkpoint is None or any(
            s.kind == "random" for s in self.model.backbone_sources.values()) else ""
        save_quality_map(self.read(result.dist), result.score_map, result.weight_map, path,
                         title=f"AHIQ score {result.score:.4f}  (reference {Path(result.ref).name}){random}", name=name)

    def finish(self, written: str | None) -> None:
        """After the output is written: remove the journals (rank 0), release the lock."""
        if written and self.ctx.main:
            Journal.remove(written)
        self.close()


def predict(model: AHIQ, pairs: list[Pair], ctx: RunContext, *, crops: str, crop_size: int, seed: int,
            batch_size: int, precision: str, num_workers: int = 0, flip_tta: bool = False, with_maps: bool = False,
            done: dict[int, float] | None = None, each=None, progress: bool = False,
            read=read_image) -> dict[int, float]:
    """``{pair index: score}`` for every pair on every rank; ``each(index, PairScore)`` as pairs complete."""
    tuples = [(p.dist, p.ref) for p in pairs]
    done = dict(done or {})
    everyone = plan(tuples, crops, batch_size, flip_tta, ctx.world_size, set(done))
    # One bar on rank 0 for all ranks' pairs (a counter in the store they share); the other ranks are quiet.
    bar = tqdm(total=sum(len(part) for share in everyone for part in share), desc="score", unit="pair",
               disable=not (progress and ctx.main), leave=False, postfix=f"{len(done)} done before" if done else None)
    key = f"progress/{ctx.rounds.get('scored', 0)}"  # one counter per call: wait_all('scored') ends each
    tick = bar.update if ctx.store is None else lambda _: setattr(bar, "n", int(ctx.store.add(key, 1))) or bar.refresh()
    for i, result in score_stream(model, tuples, crops, crop_size, seed, batch_size, precision, num_workers,
                                  with_maps=with_maps, flip_tta=flip_tta, parts=everyone[ctx.rank], read=read,
                                  progress=tick):
        if each is not None:
            each(i, result)
        done[i] = result.score
    bar.close()
    ctx.wait_all("scored")
    if ctx.world_size > 1:
        done = {i: s for part in ctx.gather(done) for i, s in part.items()}
    if sorted(done) != list(range(len(pairs))):
        raise RuntimeError(f"scored {len(done)} of {len(pairs)} pairs")
    return done


class Journal:
    """Results appended to ``<output>.journal`` (``.<rank>`` under torchrun) after a settings header, flushed per pair."""

    FORMAT = 2  # 2: identities per pair (1: keys only)

    def __init__(self, output: str, ctx: RunContext, settings: dict):
        self.path = Path(f"{output}.journal" + (f".{ctx.rank}" if ctx.world_size > 1 else ""))
        self.done: dict[tuple[str, str], tuple[list[int], float]] = {}
        self.whole: bool | None = None  # this rank's journal as read: None absent or torn in its header, else its end
        header = json.dumps({"journal": self.FORMAT, "settings": settings}, sort_keys=True)
        settings = json.loads(header)["settings"]  # as read back (lists, not tuples)
        for old in self.files(output):
            self._read(old, header, settings, ctx.main)
        ctx.wait_all("journals read")  # before any rank starts a journal of its own
        self.file = open(self.path, "w" if self.whole is None else "a", encoding="utf-8")  # the lock holder writes alone
        if self.whole is None:
            self.file.write(header + "\n")
        elif not self.whole:
            self.file.write("\n")  # after a torn line, start a fresh one
        self.file.flush()

    @staticmethod
    def files(output: str | Path) -> list[Path]:
        """The journals of ``output`` that exist, by their exact names."""
        output = Path(output)
        name = re.compile(re.escape(output.name) + r"\.journal(\.[0-9]{1,6})?")
        try:
            return sorted(output.parent / n for n in os.listdir(output.parent) if name.fullmatch(n))
        except OSError:
            return []

    def _read(self, path: Path, header: str, settings: dict, main: bool) -> None:
        def unusable(why: str) -> UserError:
            return UserError(f"{path}: {why}; delete it to start over (its pairs are scored again)")

        if path.is_symlink() or not path.is_file():
            raise unusable("is not a journal of this project (not a regular file)")
        try:
            lines = path.read_bytes().split(b"\n")
        except OSError as err:
            raise unusable(f"cannot be read ({err.strerror})") from None
        if len(lines) == 1:  # created, its header not (or not wholly) written: nothing journaled yet
            return
        try:
            first = json.loads(lines[0].decode("utf-8"))
            if not isinstance(first, dict) or "journal" not in first or not isinstance(first.get("settings"), dict):
                raise ValueError
        except (UnicodeDecodeError, ValueError):
            raise unusable("is not a readable journal (its first line is damaged or foreign)") from None
        if lines[0].decode("utf-8") != header:
            theirs = first["settings"]
            differ = [k for k in settings if theirs.get(k) != settings[k]] if first["journal"] == self.FORMAT else []
            raise UserError(f"{path}: a stopped run's results with other settings ({', '.join(differ or ['the format'])}); "
                            "give the same settings to continue it, or delete that file to start over")
        if path == self.path:
            self.whole = lines[-1] == b""  # whether its last line ended
        for number, line in enumerate(lines[1:], 2):
            entry = _journal_entry(line)
            if entry is None:  # a torn or damaged line: what follows it is not trusted either
                torn = number == len(lines)  # the last line, unfinished (a killed run) or empty
                if not torn and main:
                    note(f"note: {path}: line {number} is damaged; its pair and those journaled after it are scored "
                         "again")
                break
            key, identity, score = entry
            self.done[key] = (identity, score)

    def reusable(self, pairs: list[Pair]) -> tuple[dict[int, float], int]:
        """``({pair index: score}`` of journaled pairs whose files are unchanged, the number whose files changed)."""
        found = {i: f for i, p in enumerate(pairs) if (f := self.done.get(pair_key(p))) is not None}
        keep = {i: score for i, (identity, score) in found.items() if identity == pair_identity(pairs[i])}
        return keep, len(found) - len(keep)

    def add(self, pair: Pair, score: float) -> None:
        dist, ref = pair_key(pair)
        self.file.write(json.dumps({"dist": dist, "ref": ref, "id": pair_identity(pair), "score": score}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    @classmethod
    def remove(cls, output: str) -> None:
        for path in cls.files(output):
            path.unlink(missing_ok=True)


def pair_key(pair: Pair) -> tuple[str, str]:
    """A pair's journal key: both files resolved."""
    return str(Path(pair.dist).resolve()), str(Path(pair.ref).resolve())


def pair_identity(pair: Pair) -> list[int]:
    """What tells the versions of a pair's files apart cheaply: size, modification time (ns), inode of each."""
    return [v for st in map(os.stat, (pair.dist, pair.ref)) for v in (st.st_size, st.st_mtime_ns, st.st_ino)]


def _journal_entry(line: bytes) -> tuple[tuple[str, str], list[int], float] | None:
    """``((dist, ref), identity, score)`` of a journal line, None unless whole and well-formed (score finite)."""
    try:
        entry = json.loads(line.decode("utf-8"))
        dist, ref, identity, score = entry["dist"], entry["ref"], entry["id"], entry["score"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None
    if not (isinstance(dist, str) and isinstance(ref, str) and isinstance(identity, list) and len(identity) == 6
            and all(type(v) is int for v in identity) and type(score) in (int, float) and math.isfinite(score)):
        return None
    return (dist, ref), identity, float(score)
