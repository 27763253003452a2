"""One scoring session, the flow of score.py, test.py, the experiments and validation: open the checkpoint once,
screen the pairs once (decoded images kept for scoring), guard the outputs, build the model, score.

Under ``torchrun`` each rank scores a contiguous run of whole references (``engine.scoring.shard``); maps are
written by the rank that scored the pair, and rank 0 gathers every score. With an output file, results are
appended to a journal beside it as they come (``<output>.journal``, one per rank), so a run stopped at any
moment (SIGKILL included) continues with the pairs not yet scored and ends with the same bytes; the journal
records what defines the scores, and a resume with other settings is refused.
"""
from __future__ import annotations

import functools

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

import torch
from tqdm import tqdm

from ahiq.data.crops import parse_crops
from ahiq.data.images import read_image
from ahiq.data.records import Pair
from ahiq.data.screening import DecodedImages, screen_pairs
from ahiq.engine.config import ScoreConfig
from ahiq.engine.device import RunContext, describe_precision, setup_run
from ahiq.engine.scoring import PairScore, plan, score_stream
from ahiq.models.ahiq import AHIQ
from ahiq.models.backbones import file_sha256
from ahiq.models.checkpoint import load_model, open_checkpoint, resolve_checkpoint
from ahiq.utils.errors import Stopped, UserError, arg
from ahiq.utils.io import MAX_NAME, check_outputs, check_writable, map_file_names, write_target
from ahiq.utils.visual import save_quality_map


class ScoringSession:
    """See the module docstring. ``screen`` -> ``guard`` -> ``score`` (the model is built on first use).

    ``outputs``: the script's own output files (``{"--plot ": path}``), checked for writing at once with
    ``--output`` and ``--save_maps``, before the checkpoint is read or any image decoded."""

    def __init__(self, cfg: ScoreConfig, ctx: RunContext | None = None, outputs: dict[str, str | None] | None = None):
        self.cfg = cfg
        self.outputs = {f"{arg('output')}": cfg.output, **(outputs or {})}
        for what, path in self.outputs.items():
            check_writable(path, what)
        check_writable(cfg.save_maps, f"{arg('save_maps')}", folder=True)
        self.ctx = ctx or setup_run(cfg.run.device)
        self.checkpoint = resolve_checkpoint(cfg.checkpoint)
        self.contents, self.record = open_checkpoint(self.checkpoint)
        self.crop_size = self.record.crop(cfg.crop_size)
        parse_crops(cfg.crops)
        self.images = DecodedImages(max_pixels=cfg.run.max_pixels) if cfg.run.num_workers == 0 else None
        self.read = functools.partial(read_image, max_pixels=cfg.run.max_pixels)  # within the pixel budget
        self._model: AHIQ | None = None

    def screen(self, pairs: list[Pair], known: Iterable[str] = (), check_hint: bool = True) -> list[Pair]:
        """The usable pairs (every image decoded once; problems stop the run, or are skipped with ``skip_bad``)."""
        report = None if self.ctx.main else (lambda line: None)
        return screen_pairs(pairs, self.crop_size, self.cfg.skip_bad, list(known), report=report, keep=self.images,
                            max_pixels=self.cfg.run.max_pixels,
                            check_hint=check_hint)

    def guard(self, pairs: list[Pair], names: list[str], outputs: dict[str, str | None] | None = None,
              inputs: Iterable[str | Path] = ()) -> None:
        """Before any model is built: no output (``--output``, each map file under ``--save_maps``, the script's
        outputs, and ``outputs`` found since, such as a labels copy) is an input (the pairs' images, the
        checkpoint and weight files, the script's label files ``inputs``) or another output."""
        cfg = self.cfg
        outputs = {**self.outputs, **(outputs or {})}
        inputs = [*inputs, *(p for pair in pairs for p in (pair.dist, pair.ref))]
        inputs += [p for p in (self.checkpoint, cfg.vit_weights, cfg.cnn_weights) if p]
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
            torch.manual_seed(cfg.run.seed)  # random heads (no checkpoint) are the same on every run
            self._model = load_model(self.checkpoint, vit_weights=cfg.vit_weights, cnn_weights=cfg.cnn_weights,
                                     pretrained_backbones=cfg.pretrained_backbones, default_seed=cfg.run.seed,
                                     device=self.ctx.device, contents=self.contents, **cfg.overrides)
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

    def score(self, pairs: list[Pair], names: list[str], title: str = "AHIQ score") -> dict[int, float] | None:
        """Score ``pairs`` (named ``names`` in maps): ``{pair index: score}`` on rank 0 (every pair), None on the
        other ranks. Maps go to ``save_maps`` as pairs complete; the journal makes the run resumable."""
        cfg, ctx = self.cfg, self.ctx
        try:
            return self._score(pairs, names, title)
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

    def _score(self, pairs: list[Pair], names: list[str], title: str) -> dict[int, float] | None:
        cfg, ctx = self.cfg, self.ctx
        keys = [f"{p.dist}\t{p.ref}" for p in pairs]
        journal = Journal(cfg.output, ctx, self.settings()) if cfg.output and not write_target(cfg.output)[1] else None
        before = {i for i, k in enumerate(keys) if journal and k in journal.done}

        def each(i: int, result: PairScore) -> None:
            if cfg.save_maps and i not in before:
                self._save_map(result, self.map_files[i], names[i], title)
            if journal and i not in before:
                journal.add(keys[i], result.score)
            ctx.check()

        scores = predict(self.model, pairs, ctx, crops=cfg.crops, crop_size=self.crop_size, seed=cfg.run.seed,
                         batch_size=cfg.batch_size, precision=cfg.run.precision, num_workers=cfg.run.num_workers,
                         flip_tta=cfg.flip_tta, with_maps=bool(cfg.save_maps), each=each, progress=cfg.progress,
                         done={i: journal.done[keys[i]] for i in before},
                         read=self.images.take if self.images is not None else self.read)
        if journal:
            journal.close()
        return scores if ctx.main else None

    def _save_map(self, result: PairScore, path: Path, name: str, title: str) -> None:
        random = " (RANDOM weights: not meaningful)" if self.checkpoint is None or any(
            s.kind == "random" for s in self.model.backbone_sources.values()) else ""
        save_quality_map(self.read(result.dist), result.score_map, result.weight_map, path,
                         title=f"{title} {result.score:.4f}  (reference {Path(result.ref).name}){random}", name=name)

    def finish(self, written: str | None) -> None:
        """After the output is written (rank 0): the journals are no longer needed."""
        if written and self.ctx.main:
            Journal.remove(written)


def predict(model: AHIQ, pairs: list[Pair], ctx: RunContext, *, crops: str, crop_size: int, seed: int,
            batch_size: int, precision: str, num_workers: int = 0, flip_tta: bool = False, with_maps: bool = False,
            done: dict[int, float] | None = None, each=None, progress: bool = False,
            read=read_image) -> dict[int, float]:
    """``{pair index: score}`` for every pair, on every rank: each rank scores its share of whole references
    (:func:`engine.scoring.plan`; pairs in ``done`` keep their scores unless their segment must be redone), calls
    ``each(index, PairScore)`` as pairs complete, and the ranks gather the scores. A rank that fails stops the
    others (they see it at their next pair, or at the gathering)."""
    tuples = [(p.dist, p.ref) for p in pairs]
    done = dict(done or {})
    everyone = [plan(tuples, crops, batch_size, flip_tta, r, ctx.world_size, set(done)) for r in range(ctx.world_size)]
    mine = everyone[ctx.rank]
    # One bar on rank 0 for all ranks' pairs (a counter in the store they share); the other ranks are quiet.
    bar = tqdm(total=sum(map(len, everyone)), desc="score", unit="pair", disable=not (progress and ctx.main),
               leave=False, postfix=f"{len(done)} done before" if done else None)
    key = f"progress/{ctx.rounds.get('scored', 0)}"  # one counter per call: wait_all('scored') ends each
    tick = bar.update if ctx.store is None else lambda _: setattr(bar, "n", ctx.count(key)) or bar.refresh()
    for i, result in score_stream(model, tuples, crops, crop_size, seed, batch_size, precision, num_workers,
                                  with_maps=with_maps, flip_tta=flip_tta, indices=mine, read=read, progress=tick):
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
    """Results appended as they come to ``<output>.journal`` (``.journal.<rank>`` under torchrun), flushed per
    pair: a header line with the settings, then ``{"key": ..., "score": ...}`` lines. Reading ignores a torn last
    line; a journal with other settings is refused."""

    def __init__(self, output: str, ctx: RunContext, settings: dict):
        self.path = Path(f"{output}.journal" + (f".{ctx.rank}" if ctx.world_size > 1 else ""))
        self.done: dict[str, float] = {}
        header = json.dumps({"journal": 1, "settings": settings}, sort_keys=True)
        settings = json.loads(header)["settings"]  # as read back (lists, not tuples)
        for old in sorted(Path(output).parent.glob(Path(output).name + ".journal*")):
            lines = old.read_text(encoding="utf-8").split("\n")
            if lines == [""]:
                continue  # created, nothing written yet
            if lines[0] != header:
                theirs = json.loads(lines[0]).get("settings", {}) if lines[0].startswith("{") else {}
                differ = [k for k in settings if theirs.get(k) != settings[k]] or ["the format"]
                raise UserError(f"{old}: a stopped run's results with other settings ({', '.join(differ)}); give the "
                                "same settings to continue it, or delete that file to start over")
            for line in lines[1:]:
                try:
                    entry = json.loads(line)
                    self.done[entry["key"]] = float(entry["score"])
                except (ValueError, KeyError, TypeError):
                    pass  # the torn last line of a run that was killed while writing
        if self.done and ctx.main:
            print(f"resume: {len(self.done)} pair(s) already scored in {self.path.parent}/"
                  f"{Path(output).name}.journal*", file=sys.stderr)
        ctx.wait_all("journals read")  # before any rank starts a journal of its own
        self.file = open(self.path, "a", encoding="utf-8")
        if self.file.tell() == 0:
            self.file.write(header + "\n")
        elif not self.path.read_text(encoding="utf-8").endswith("\n"):
            self.file.write("\n")  # after a torn line, start a fresh one

    def add(self, key: str, score: float) -> None:
        self.file.write(json.dumps({"key": key, "score": score}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    @staticmethod
    def remove(output: str) -> None:
        for path in Path(output).parent.glob(Path(output).name + ".journal*"):
            path.unlink(missing_ok=True)
