"""Files: atomic writes, output checks before work starts (no output on an input, on another output, or outside its
folder), one writer per run folder, and the one safe way to read a ``torch.save`` file."""
from __future__ import annotations

import json
import os
import pickle
import re
import stat
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, Iterable, Sequence

import numpy as np

from ahiq.utils.errors import UserError
from ahiq.utils.inputs import read_by_this_run, read_so_far, reading

# Temporary files of atomic writes: ``.<name>.<random>.tmp`` beside the target (what mkstemp makes below).
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
MAX_NAME = 255 - len("..12345678.tmp")  # bytes of a file name whose temporary name still fits (255 bytes)


def shared_folder() -> Path:
    """The team's shared folder: ``$AHIQ_SHARED``, else ``../shared`` beside the project."""
    return Path(os.environ.get("AHIQ_SHARED") or Path(__file__).resolve().parents[2] / "shared")


def _why(err: OSError) -> str:
    return (err.strerror or type(err).__name__).lower()


def write_target(path: str | os.PathLike) -> tuple[Path, bool]:
    """Where writing ``path`` lands (a link followed), and whether it is a stream written through (``-``, a FIFO)."""
    if str(path) == "-":
        return Path("-"), True
    path, link = Path(path), False
    try:
        link = path.is_symlink()
        mode = path.stat().st_mode  # through a link: what it points at (/dev/stdout, a pipe, a terminal)
    except OSError:  # absent (a link: its target), or a name the file system refuses (check_writable says so)
        mode = 0
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        return path, True
    return (path.resolve() if link else path), False


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` for a temporary file beside ``path``, then rename it onto ``path`` (streams are written
    through). A failed write leaves ``path`` as it was and is one :class:`UserError`; so is a file this run read."""
    path, stream = write_target(path)
    read_as = None if str(path) == "-" else read_by_this_run(path)
    if read_as is not None:
        raise UserError(f"{path}: is the input {read_as} this run read; writing there would destroy it; choose "
                        "another name")
    tmp = None
    try:
        if str(path) == "-":  # written to the stream as it is: reopening /dev/stdout with "w" truncates a file
            fd, tmp = tempfile.mkstemp(suffix=".tmp")
            os.close(fd)
            write(tmp)
            sys.stdout.flush()
            out = getattr(sys.stdout, "buffer", sys.stdout)  # no buffer: a text-only stand-in (a test's capture)
            data = Path(tmp).read_bytes()
            out.write(data if out is not sys.stdout else data.decode("utf-8", "surrogateescape"))
            out.flush()
            return
        if stream:
            write(str(path))
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        mask = os.umask(0o022)  # read the umask (mkstemp made the file 0600): the file gets open()'s usual mode
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        write(tmp)
        os.replace(tmp, path)
        tmp = None
    except (OSError, RuntimeError) as err:
        cause: BaseException | None = err  # torch.save turns a failed write into a RuntimeError about its position
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__context__
        if cause is None:
            raise
        raise UserError(f"{path}: cannot write ({_why(cause)}); free space or choose another place") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8", newline=""))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically, flushed to disk before the rename."""
    import torch  # here, not at the top: the options read names through this module before torch is needed

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a Python file: a full disk raises OSError (ENOSPC), not a torch error
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, write)


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete (and return) the temporary files interrupted atomic writes left directly in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in sorted(folder.iterdir()) if p.is_file() and TEMP_NAME.match(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def check_writable(path: str | os.PathLike | None, what: str, folder: bool = False) -> None:
    """Before long work, prove ``path``'s folder (``path`` when ``folder``) takes a file, else a :class:`UserError`."""
    if not path:
        return
    check_name_length(path, what, folder)
    path, stream = write_target(path)
    if stream:
        return
    where = path if folder else path.parent
    if not folder and path.is_dir():
        raise UserError(f"{what}{path}: is a folder; give a file name")
    try:
        where.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{'write-check' if folder else path.name}.", suffix=".tmp", dir=where)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserError(f"{what}{path}: cannot write to {where} ({_why(err)}); choose another place") from None


def check_name_length(path: str | os.PathLike | None, what: str, folder: bool = False) -> None:
    """A :class:`UserError` when a part of ``path`` is longer than 255 bytes (the file's name: :data:`MAX_NAME`)."""
    limit = 255 if folder else MAX_NAME
    if path and (len(Path(path).name.encode()) > limit or any(len(part.encode()) > 255 for part in Path(path).parts)):
        raise UserError(f"{what}{path}: a name in it is longer than {limit} bytes; give a shorter one")


def check_outputs(outputs: dict[str, str | os.PathLike | None], inputs: Iterable[str | os.PathLike]) -> None:
    """No output (``{what: path}``) is an input, a file this run read, or another output; else one :class:`UserError`."""
    taken: dict[Path, str] = {Path(p).resolve(): f"the input {p}" for p in [*read_so_far(), *inputs]}
    for what, path in outputs.items():
        if not path or str(path) == "-":
            continue
        real, stream = write_target(path)
        if stream:
            continue
        real = real.resolve()
        if real in taken:
            raise UserError(f"{what}{path}: is {taken[real]}; writing there would destroy it; choose another name")
        taken[real] = f"{what.strip()} {path}"


def map_file_names(names: Sequence[str], suffix: str) -> list[str]:
    """One relative path per result name inside a maps folder (``..`` -> ``__``), distinct even ignoring case:
    ``jpeg/img1.bmp`` -> ``jpeg/img1.png``, else the whole name plus ``suffix``."""
    inside = ["/".join("__" if part == ".." else part for part in PurePosixPath(n.replace("\\", "/")).parts
                       if part not in ("/", ".")) or "_" for n in names]
    files = [str(PurePosixPath(n).with_suffix(suffix)) if PurePosixPath(n).suffix else n + suffix for n in inside]
    if len({f.lower() for f in files}) == len(files):
        return files
    return [f"{n}{suffix}" for n in inside]


def lock_folder(folder: str | os.PathLike) -> IO:
    """Hold ``folder/.lock`` (one writer per run folder) while the returned file stays open."""
    return lock_file(Path(folder) / ".lock", f"{folder}: another run is writing there",
                     "wait for it to end, or give another name or folder")


def lock_file(path: str | os.PathLike, busy: str, advice: str) -> IO:
    """Hold the lock file ``path`` (``fcntl.flock``) while the returned file stays open; held elsewhere: one
    :class:`UserError` ``"<busy> (process N); <advice>"``."""
    import fcntl

    path = Path(path)
    while True:
        try:
            handle = open(path, "a+")
        except OSError as err:
            raise UserError(f"{path}: cannot create the lock file ({_why(err)}); choose another place") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise UserError(f"{busy} ({holder}); {advice}") from None
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()  # its holder deleted it as we took it: take the one now there
    handle.seek(0)
    if not re.fullmatch(r"(process \d+\s*)?", handle.read(64)):  # a file of the user's with our lock's name
        handle.close()
        raise UserError(f"{path}: exists and is not a lock file of this project; move it away (a run keeps its lock "
                        "there)")
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()}\n")
    handle.flush()
    return handle


def unlock_file(handle: IO) -> None:
    """Release a :func:`lock_file` lock, deleting the file first (while still held)."""
    Path(handle.name).unlink(missing_ok=True)
    handle.close()


def save_options(values: dict, folder: str | os.PathLike, stem: str = "opt") -> None:
    """Write ``<stem>.json`` (machine-readable, a valid ``--config`` file) and ``<stem>.txt`` (readable)."""
    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(values.items())}
    atomic_write_text(Path(folder) / f"{stem}.json", json.dumps(values, indent=2) + "\n")
    width = max(map(len, values))
    atomic_write_text(Path(folder) / f"{stem}.txt", "".join(f"{k:<{width}} : {v}\n" for k, v in values.items()))


def _numpy_globals() -> list:
    """The non-tensor types :func:`load_torch_file` allows: numpy float scalars (the released ``loss``), uint32 arrays."""
    pickled = (np.float64(0).__reduce__()[0], np.zeros(1).__reduce__()[0])  # multiarray's scalar and _reconstruct
    return [np.dtype, np.ndarray, *(type(np.dtype(t)) for t in (np.float64, np.float32, np.uint32)),
            *((f, f"numpy.{core}.multiarray.{f.__name__}") for core in ("core", "_core") for f in pickled)]


def existing_file(path: str | os.PathLike, what: str, hint: str = "") -> Path:
    """``path`` when it is a file, registered as read (:func:`utils.inputs.reading`); else a one-line
    :class:`UserError`: a folder, or not found (``hint``: what to do then)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a {what}; give the file inside it")
    if not path.is_file():
        raise UserError(f"{path}: {what} not found" + (f"; {hint}" if hint else ""))
    reading(path)
    return path


def load_torch_file(path: str | os.PathLike, what: str = "PyTorch file") -> Any:
    """``torch.load`` with ``weights_only=True`` plus :func:`_numpy_globals`; anything else is a :class:`UserError`."""
    path = existing_file(path, what)
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy 2 warns about numpy.core names in old files
            with torch.serialization.safe_globals(_numpy_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError, KeyError, IndexError,
            AttributeError) as err:
        # what the weights-only unpickler refused (a global, a class) and not a damaged file's bytes
        if isinstance(err, pickle.UnpicklingError) and "Unsupported operand" not in str(err):
            raise UserError(f"{path}: holds Python objects other than tensors; refusing to unpickle it "
                            "(see README, Security)") from None
        raise UserError(f"{path}: not a readable {what} (damaged or truncated); re-download or re-create it") from None
