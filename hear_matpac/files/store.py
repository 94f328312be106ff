"""The state of an `embed` output folder: which settings made its outputs, which source file
each output came from, and which run may write it now.

Files kept in OUT besides the outputs (`files.outputs` names those):

- `embed-info.json`: the folder's settings: format version, the weights' sha256 (their
  content, so a byte-identical copy at another path is the same weights; the path is kept for
  information), the model options that change the numbers, normalised by `load_model` (a
  default given explicitly equals one omitted) and the embedding sizes.
- `embed-manifest.jsonl`: one JSON line per output name, `{"name", "source", "size",
  "mtime_ns", "frames"}`: the source file's absolute path and its size and modification time
  when it was read, and whether `NAME.frames.npz` exists too. A later line for a name replaces
  an earlier one; `{"name", "removed": true}` drops it; `{"name", "writing": true}` says that a
  run is about to write the name's files (appended, durably, before it does). Lines are appended
  as outputs are written and the file is rewritten compactly (records only) when a run opens
  and closes the folder. The file is strict UTF-8 JSON: a name or path that is not valid UTF-8
  (a file name with the byte `\xff`, which Python holds as a lone surrogate) is stored
  losslessly as its bytes in base64 under `name_bytes` / `source_bytes`, with `name` / `source`
  holding a readable form (U+FFFD for each such byte).
- `.embed.lock`: locked (`flock`, exclusive) for the whole run.
- `.embed.ranks.lock`, `embed-manifest.rank<R>.jsonl`, `.embed.job`: only after a `torchrun`
  job (below).

The folder's outputs are the output files under OUT, except those in a sub-folder that is an
output folder of its own (it holds `embed-info.json` or `.embed.lock`): a nested folder is
never looked into, cleaned or written into.

The invariant, after any sequence of runs (killed ones included): every output file in OUT
is recorded in the manifest (or a rank's journal, below) and equals what the settings in
`embed-info.json` give for its recorded source. It is kept by: outputs written atomically
(temporary file, rename), a chunk's files made durable together (one sync of the group, then
the renames, then one fsync per folder) and recorded right after that, a name's old record
dropped and its `writing` line appended (durably) before its outputs are rewritten; on opening,
deleting temporary files of killed runs, output files that a `writing` line names and no
record covers (a killed run's), and records whose output is gone; new settings accepted only
in a folder without outputs, or with `overwrite`, which first deletes every output in it.

What embed deletes, and nothing else: those temporary files and unrecorded outputs of its own
killed runs, and, with `overwrite`, the outputs of other settings or of unknown origin. An
output file that no line of the manifest names (a deleted manifest, a file put there by hand)
is of unknown origin: the run is refused (`ValueError`), naming `overwrite` or moving the
files away; the manifest is not rebuilt from the outputs, since an output does not say which
file it came from.

Sharing with the ranks of one `torchrun` job (`files.ranks`; rank 0 plans and splits the
inputs, so no two ranks write one name): rank 0 opens the folder as a single run does (lock,
clean, claim settings) and holds `.embed.lock` until the end. The other ranks join only once
rank 0 has the folder (`OutputStore.join`), and only the very folder rank 0 holds: rank 0
writes a new random token to `.embed.job` and sends it, and a rank whose `--out` holds another
token (a relative path from another working directory, another machine's folder) stops. Each
holds `.embed.ranks.lock` *shared* while it writes and appends its records to its own journal, `embed-manifest.rank<R>.jsonl`. Rank 0
folds the journals into `embed-manifest.jsonl` when it closes the folder, after every rank has
finished. A run that opens the folder takes `.embed.lock`, then waits for
`.embed.ranks.lock` exclusively (when it exists), so ranks outliving a killed rank 0 still hold
it off (the job's token voided first, so a rank that comes later stops); it folds whatever
journals killed ranks left (last line wins, in rank order) before it cleans, so outputs they
recorded are kept.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, Iterable, Iterator, Mapping, Optional

import numpy as np

from ..io import (atomic_write, first_line, InputError, InputTypeError, MissingFile, publish, temporary_beside,
                  write_json)
from .outputs import FRAMES_SUFFIX, INFO_FILE, SCENE_SUFFIX, output_paths, save_frames, save_scene
from .folders import ensure_folder

FORMAT = 2  # embed-info.json without "format" comes from a version that did not record sources
MANIFEST_FILE = "embed-manifest.jsonl"
LOCK_FILE = ".embed.lock"
RANKS_LOCK_FILE = ".embed.ranks.lock"  # held shared by the ranks (but rank 0) of a torchrun job
JOB_FILE = ".embed.job"  # rank 0's token for the job now writing: the ranks check it is their folder
_JOURNAL = re.compile(r"embed-manifest\.rank([0-9]+)\.jsonl")
_STATE_FILES = (INFO_FILE, MANIFEST_FILE)
_OUTPUT_SUFFIXES = (SCENE_SUFFIX, FRAMES_SUFFIX)
# atomic.atomic_path's temporary files: ".<target name>.<8 random chars>.tmp"
_TEMP = re.compile(r"\.(.+)\.[A-Za-z0-9_]{8}\.tmp")


@dataclass(frozen=True)
class Source:
    """Which file an output came from: absolute path, size and mtime (ns) when it was read."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> "Source":
        """`path`'s identity now (follows symlinks: the content is what counts)."""
        st = os.stat(path)
        return cls(os.path.abspath(path), st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class Record:
    """A name's outputs: made from `source`; `frames`: `NAME.frames.npz` exists too."""

    source: Source
    frames: bool


@dataclass(frozen=True)
class Need:
    """What a run must compute for one input: the scene and/or frames outputs (both False: skip)."""

    scene: bool
    frames: bool


class OutputStore:
    """An output folder opened for one run: locked, cleaned, its settings claimed. Use as a
    context manager (`OutputStore.open(...)`); closing compacts the manifest and unlocks."""

    def __init__(self, out: Path, lock: IO[bytes], records: dict[str, Record], journal: str = MANIFEST_FILE) -> None:
        self.out = out
        self._lock = lock
        self.records = records
        self.info: Optional[dict[str, Any]] = None
        self._present: set[str] = set()
        self._unknown: list[str] = []  # unrecorded outputs that no run said it was writing
        self._writing: set[str] = set()  # names a run said it was writing (`writing` lines)
        self.nested: list[str] = []  # sub-folders that are output folders of their own
        self._journal_name = journal  # where `write` appends its records
        self._journal: Optional[IO[str]] = None

    @classmethod
    @contextlib.contextmanager
    def open(
        cls, out: Path, settings: Mapping[str, Any], overwrite: bool, report: Callable[[str], None]
    ) -> Iterator["OutputStore"]:
        """Create `out` if needed, lock it (waiting, with a message through `report`, while
        another run holds it), clean what killed runs left, and claim `settings` for it.

        `ValueError` when the folder holds outputs made with other settings (unless
        `overwrite`: they are all deleted first) or its state files are malformed."""
        ensure_folder(out)
        with open(out / LOCK_FILE, "ab") as lock, _held(lock):  # closing it releases the lock
            _lock_exclusive(lock, out, report, "another embed run")
            _wait_for_ranks(out, report)
            store = cls(out, lock, {})
            try:
                store._load_and_clean(report)
                store._claim(dict(settings), overwrite, report)
                store._compact()
                store._drop_journals()
                yield store
                store._fold_journals()
                store._compact()
                store._drop_journals()
            finally:
                store._close_journal()

    @classmethod
    @contextlib.contextmanager
    def join(cls, out: Path, rank: int, records: Mapping[str, Record], token: str) -> Iterator["OutputStore"]:
        """The folder as rank `rank` (> 0) of a torchrun job sees it, once rank 0 holds it
        (`open`) and marked it with `token` (`mark_job`): `records` are those of the names this
        rank embeds, and `write` appends to this rank's journal, which rank 0 folds into the
        manifest when it closes the folder."""
        _check_job_folder(out, rank, token)  # before creating the lock file in a folder that is not the job's
        with open(out / RANKS_LOCK_FILE, "ab") as lock, _held(lock):
            fcntl.flock(lock.fileno(), fcntl.LOCK_SH)  # free: only a run holding .embed.lock takes it exclusively
            _check_job_folder(out, rank, token)  # still this job's: no run has taken the folder since
            store = cls(out, lock, dict(records), journal=rank_journal(rank))
            try:
                yield store
            finally:
                store._close_journal()

    def mark_job(self) -> str:
        """Rank 0 of a torchrun job: a new token in `.embed.job`, by which the other ranks know
        that their `--out` is this folder (`_check_job_folder`)."""
        token = uuid.uuid4().hex
        with atomic_write(self.out / JOB_FILE) as handle:
            handle.write(token.encode("ascii"))
        return token

    # -- planning ---------------------------------------------------------------------------

    def need(self, name: str, source: Source, frames: bool, overwrite: bool) -> Need:
        """What to compute for input `name` read from `source` (`frames`: frames wanted).

        A name recorded from another path is a `ValueError` unless `overwrite` (see
        `collision`); a changed source or `overwrite` recomputes every output the name has or
        wants, so a name's scene and frames always come from one source and one run. A name
        whose outputs would land in a nested output folder is a `ValueError`."""
        self._check_not_nested(name)
        record = self.records.get(name)
        if record is None:
            return Need(True, frames)
        if overwrite or record.source != source:
            return Need(True, frames or record.frames)
        return Need(False, frames and not record.frames)

    def collision(self, name: str, source: Source) -> Optional[str]:
        """The problem, when output `name` is recorded as made from a file other than `source`."""
        record = self.records.get(name)
        if record is None or record.source.path == source.path:
            return None
        return (
            f"{output_paths(self.out, name).scene} holds the embedding of {record.source.path}, and "
            f"{source.path} has the same name"
        )

    # -- writing ----------------------------------------------------------------------------

    def write(self, outputs: Iterable[tuple[str, Source, Need, np.ndarray, Optional[tuple[np.ndarray, np.ndarray]]]]) -> None:
        """Write and record each `(name, source, need, scene, (embeddings, timestamps) or None)`,
        as one group: the fsyncs are per group, not per file.

        Before any file changes, the rewritten names' old records are dropped and every name
        gets a `writing` line (durably). Then every file goes to a temporary file beside its
        output; the group's temporary files are made durable together (`_sync_files`), renamed
        into place, their folders synced once each, and only then recorded. A write error is an
        `OSError` naming the output file; every file written before it is still made durable,
        renamed and recorded first. Killed at any point, a run leaves temporary files (deleted
        by the next run) or outputs named by `writing` lines and not recorded (deleted too):
        never a half-written output, never a record of a file not on disk."""
        outputs = list(outputs)
        rewritten = [name for name, _, need, _, _ in outputs if need.scene and name in self.records]
        self._append([_name_line(name, removed=True) for name in rewritten]
                     + [_name_line(name, writing=True) for name, *_ in outputs], sync=True)  # fmt: skip
        for name in rewritten:
            del self.records[name]
        staged: list[tuple[Path, Path, str, Record]] = []  # temporary file, output, name, its record then
        error: Optional[OSError] = None
        try:
            for name, source, need, scene, frames in outputs:
                paths = output_paths(self.out, name)
                if need.scene:  # (always a rewritten name, whose old record is gone)
                    staged.append((_staged(save_scene, paths.scene, scene), paths.scene, name, Record(source, False)))
                if need.frames:
                    staged.append((_staged(save_frames, paths.frames, *frames), paths.frames, name, Record(source, True)))
        except OSError as err:
            error = err
        try:
            self._commit(staged)
        except BaseException:
            for temp, *_ in staged:
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
            raise
        if error is not None:
            raise error

    def _commit(self, staged: list[tuple[Path, Path, str, Record]]) -> None:
        """Make the staged files durable (one sync), rename them into place, sync their
        folders (once each), then record them."""
        if not staged:
            return
        _sync_files([temp for temp, *_ in staged])
        for temp, final, _, _ in staged:
            publish(temp, final)
        for folder in sorted({final.parent for _, final, _, _ in staged}):
            _sync_folder(folder)
        for _, _, name, record in staged:
            self.records[name] = record
        self._append([_record_line(name, record) for _, _, name, record in staged], sync=False)

    # -- internals --------------------------------------------------------------------------

    def _load_and_clean(self, report: Callable[[str], None]) -> None:
        self.info = _read_info(self.out / INFO_FILE)
        self.records = _read_manifest(self.out / MANIFEST_FILE, writing=self._writing)
        self._fold_journals()  # before the orphans: outputs that killed ranks recorded stay
        temps, present, self.nested = _scan(self.out)
        for temp in temps:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        if temps:
            report(f"removed {len(temps)} temporary file(s) left by an interrupted run")
        self._present = present
        if self.info is None or "format" not in self.info:
            return  # outputs of unknown or unrecorded origin: _claim decides
        unrecorded = sorted(p for p in present if not self._recorded(p))
        orphans = [p for p in unrecorded if _output_name(p) in self._writing]  # a killed run's
        self._unknown = [p for p in unrecorded if _output_name(p) not in self._writing]
        self._unlink(orphans)
        if orphans:
            report(f"removed {len(orphans)} output file(s) that an interrupted run wrote but did not record")
        self._present = present.difference(orphans)
        for name, record in list(self.records.items()):
            if (name + SCENE_SUFFIX) not in self._present:
                del self.records[name]
                with contextlib.suppress(FileNotFoundError):
                    output_paths(self.out, name).frames.unlink()
            elif record.frames and (name + FRAMES_SUFFIX) not in self._present:
                self.records[name] = Record(record.source, False)

    def _recorded(self, relative: str) -> bool:
        if relative.endswith(SCENE_SUFFIX):
            return relative[: -len(SCENE_SUFFIX)] in self.records
        record = self.records.get(relative[: -len(FRAMES_SUFFIX)])
        return record is not None and record.frames

    def _claim(self, settings: dict[str, Any], overwrite: bool, report: Callable[[str], None]) -> None:
        settings["format"] = FORMAT
        previous = self.info
        if previous is not None and _same_settings(previous, settings):
            self._settle_unknown(overwrite, report)
            return
        present = self._present
        if present:
            if not overwrite:
                raise InputError(f"{self.out} holds embeddings made with other settings "
                                 f"({_difference(previous, settings)}; {len(present)} file(s)); use another "
                                 "--out, or --overwrite to delete them all and embed these inputs with the "
                                 "new settings")  # fmt: skip
            self._unlink(present)
            report(f"--overwrite with new settings: removed the {len(present)} output file(s) of the old ones")
        self.records = {}
        (self.out / MANIFEST_FILE).unlink(missing_ok=True)
        _write_json(self.out / INFO_FILE, settings)
        self.info = settings

    def _unlink(self, paths) -> None:
        """Delete these outputs (paths relative to the folder); one already gone is fine."""
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                (self.out / path).unlink()

    def _settle_unknown(self, overwrite: bool, report: Callable[[str], None]) -> None:
        """Outputs of unknown origin in a folder of these settings: deleted with `overwrite`,
        else the run is refused (neither kept as if recorded nor deleted)."""
        unknown = self._unknown
        if not unknown:
            return
        if not overwrite:
            lost = "" if (self.out / MANIFEST_FILE).exists() else f"; {MANIFEST_FILE} is missing"
            raise InputError(f"{self.out} holds {len(unknown)} output file(s) that {MANIFEST_FILE} does not record "
                             f"(such as {self.out / unknown[0]}{lost}): embed cannot tell which file they came from, "
                             "so it neither keeps nor deletes them; move them out of the folder, use --overwrite to "
                             "delete them and embed again, or use another --out")  # fmt: skip
        self._unlink(unknown)
        self._present.difference_update(unknown)
        self._unknown = []
        report(f"--overwrite: removed {len(unknown)} output file(s) that {MANIFEST_FILE} did not record")

    def _check_not_nested(self, name: str) -> None:
        parents = PurePosixPath(name).parents
        for folder in self.nested:
            if PurePosixPath(folder) in parents:
                raise InputError(f"{output_paths(self.out, name).scene} would be written inside {self.out / folder}, "
                                 "another embed output folder (it holds its own embed-info.json); use another "
                                 f"--out, or move that folder out of {self.out}")  # fmt: skip

    def _journals(self) -> list[Path]:
        """The ranks' journals in the folder, in rank order."""
        found = [(int(m.group(1)), self.out / m.group(0)) for m in map(_JOURNAL.fullmatch, os.listdir(self.out)) if m]
        return [path for _, path in sorted(found)]

    def _fold_journals(self) -> None:
        for path in self._journals():
            _read_manifest(path, self.records, self._writing)

    def _drop_journals(self) -> None:
        """Delete the journals, once the manifest written before holds what they recorded."""
        for path in self._journals():
            path.unlink(missing_ok=True)

    def _append(self, lines: list[str], sync: bool) -> None:
        if not lines:
            return
        if self._journal is None:
            self._journal = open(self.out / self._journal_name, "a", encoding="utf-8")
        self._journal.write("".join(line + "\n" for line in lines))
        self._journal.flush()
        if sync:
            os.fsync(self._journal.fileno())

    def _close_journal(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def _compact(self) -> None:
        self._close_journal()
        path = self.out / MANIFEST_FILE
        if not self.records:
            path.unlink(missing_ok=True)
            return
        with atomic_write(path) as handle:
            text = "".join(_record_line(name, r) + "\n" for name, r in sorted(self.records.items()))
            handle.write(text.encode("utf-8"))


def rank_journal(rank: int) -> str:
    """The file name of rank `rank`'s journal of records."""
    return f"embed-manifest.rank{rank}.jsonl"


_HELD_LOCKS: set[int] = set()  # descriptors of this process's held lock files


@contextlib.contextmanager
def _held(lock: IO[bytes]) -> Iterator[None]:
    """Note `lock`'s descriptor while it is open, for `forget_locks_in_child`."""
    _HELD_LOCKS.add(lock.fileno())
    try:
        yield
    finally:
        _HELD_LOCKS.discard(lock.fileno())


def forget_locks_in_child() -> None:
    """In a process forked from a run that holds the folder's locks (a decoding worker): point
    its copies of the lock files' descriptors at /dev/null. A `flock` belongs to the open file,
    which a fork shares: without this, a worker outliving its killed parent would hold the
    folder, and the next run would wait for it."""
    if not _HELD_LOCKS:
        return
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        for fd in list(_HELD_LOCKS):
            os.dup2(null, fd)  # the number stays valid; only this process's reference changes
    finally:
        os.close(null)
    _HELD_LOCKS.clear()


def _staged(save: Callable[..., None], path: Path, *data: Any) -> Path:
    """`save(temporary, *data)` into a new temporary file beside `path` (named as the next run
    cleans up: `.NAME.XXXXXXXX.tmp`), not synced. An `OSError` names `path` when it fails (a
    write into an open file, as under `ulimit -f`, names none); the temporary file is gone."""
    try:
        temp = temporary_beside(path)
    except OSError as err:
        raise OSError(err.errno, f"{err.strerror or first_line(err)} (writing an output; the outputs written "
                      "before it are recorded)", str(path)) from err  # fmt: skip
    try:
        save(temp, *data)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        if not isinstance(err, OSError):
            raise
        raise OSError(err.errno, f"{err.strerror or first_line(err)} (writing an output; the outputs written "
                      "before it are recorded)", str(path)) from err  # fmt: skip
    return temp


def _sync_files(paths: list[Path]) -> None:
    """Make the data of `paths` durable: one `syncfs` per file system they are on (Linux), else
    an fsync of each file. One call per group instead of one per file: at tens of thousands of
    files a second, per-file fsyncs are what a disk does most."""
    if _syncfs is not None:
        devices: dict[int, Path] = {}
        for path in paths:
            devices.setdefault(os.stat(path).st_dev, path)
        for path in devices.values():
            fd = os.open(path, os.O_RDONLY)
            try:
                if _syncfs(fd) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"syncfs failed: {os.strerror(code)}", str(path))
            finally:
                os.close(fd)
        return
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sync_folder(folder: Path) -> None:
    """fsync `folder`, so the renames into it are durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _find_syncfs() -> Optional[Callable[[int], int]]:
    """libc's `syncfs(fd)` (Linux), or None where there is none."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_syncfs = _find_syncfs()


def _output_name(relative: str) -> str:
    """The input name whose output file is `relative`."""
    suffix = SCENE_SUFFIX if relative.endswith(SCENE_SUFFIX) else FRAMES_SUFFIX
    return relative[: -len(suffix)]


def _lock_exclusive(lock: IO[bytes], out: Path, report: Callable[[str], None], holder: str) -> None:
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        report(f"waiting for {holder} writing to {out} (it holds {lock.name})")
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)


def _check_job_folder(out: Path, rank: int, token: str) -> None:
    """`FileNotFoundError` unless `out`, as rank `rank` sees it, is the folder rank 0 marked
    with `token`."""
    where = f"--out {out} on rank {rank} (working directory {os.getcwd()})"
    fix = "give --out as an absolute path on a file system that every rank of the job sees"
    if not out.is_dir():
        raise MissingFile(f"{where}: no such folder; {fix}")
    try:
        found = (out / JOB_FILE).read_bytes().decode("ascii", errors="replace")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        found = None
    if found != token:
        why = f"no {JOB_FILE} there" if found is None else f"its {JOB_FILE} is another job's"
        raise MissingFile(f"{where} is not the folder rank 0 writes to ({why}); {fix}")


def _wait_for_ranks(out: Path, report: Callable[[str], None]) -> None:
    """Void an earlier torchrun job's token, then wait until none of its ranks writes to `out`
    (they hold the ranks' lock). In this order, a rank of that job that comes late (its rank 0
    killed) either holds the lock before the token goes, and is waited for, or finds no token
    once it holds the lock (`join`), and stops."""
    (out / JOB_FILE).unlink(missing_ok=True)
    try:
        lock = open(out / RANKS_LOCK_FILE, "rb")  # never created here: only a torchrun job's ranks take it
    except FileNotFoundError:
        return
    with lock:
        _lock_exclusive(lock, out, report, "the ranks of an earlier torchrun job")


def _scan(out: Path) -> tuple[list[Path], set[str], list[str]]:
    """Temporary files of embed's writes, output files, and nested output folders (POSIX paths
    relative to `out`), none looked for inside a nested output folder."""
    temps, outputs, nested = [], set(), []
    for root, dirs, files in os.walk(out):
        dirs.sort()
        base = Path(root)
        for name in dirs:  # not followed by the walk: outputs there would be neither seen nor cleaned
            if (base / name).is_symlink():
                raise InputError(f"{base / name} is a symbolic link to a folder inside the output folder; embed "
                                 f"keeps every output in {out} itself: replace the link by a real folder, or "
                                 "use another --out")  # fmt: skip
        for name in list(dirs):  # another run's folder: its outputs and temporary files are its own
            if any(os.path.lexists(base / name / mark) for mark in (INFO_FILE, LOCK_FILE)):
                dirs.remove(name)
                nested.append((base / name).relative_to(out).as_posix())
        for name in files:
            match = _TEMP.fullmatch(name)
            if match:
                target = match.group(1)
                if target.endswith(_OUTPUT_SUFFIXES) or (base == out and target in _STATE_FILES):
                    temps.append(base / name)
            elif name.endswith(_OUTPUT_SUFFIXES):
                outputs.add((base / name).relative_to(out).as_posix())
    return temps, outputs, nested


def _read_info(path: Path) -> Optional[dict[str, Any]]:
    if not path.exists():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not an embed-info record (not UTF-8 text: {err.reason})") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not an embed-info record (not JSON: {err})") from None
    if not isinstance(info, dict) or not isinstance(info.get("model_options", {}), dict):
        raise InputError(
            f"{path}: not an embed-info record (expected a JSON object with the weights and model "
            f"options, found {type(info).__name__}); delete it and the folder's outputs, or use another --out"
        )
    return info


def _read_manifest(path: Path, records: Optional[dict[str, Record]] = None,
                   writing: Optional[set[str]] = None) -> dict[str, Record]:  # fmt: skip
    """Name -> record, last line winning, applied to `records` (a new dict by default); the
    names of `writing` lines are added to `writing`. A torn last line (a run killed while
    appending) is ignored."""
    records = {} if records is None else records
    if not path.exists():
        return records
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            name = _text(entry, "name")
            if entry.get("writing"):
                if writing is not None:
                    writing.add(name)
                continue
            if entry.get("removed"):
                records.pop(name, None)
                continue
            source = Source(_text(entry, "source"), int(entry["size"]), int(entry["mtime_ns"]))
            records[name] = Record(source, bool(entry["frames"]))
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, binascii.Error) as err:
            if number == len(lines):  # no newline after it: cut short by a kill
                continue
            raise InputError(f"{path}:{number}: not a manifest line ({type(err).__name__}: {err}); "
                             "delete the folder's outputs and this file, or use another --out") from None  # fmt: skip
    return records


def _record_line(name: str, record: Record) -> str:
    s = record.source
    return json.dumps({**_texts("name", name), **_texts("source", s.path), "size": s.size, "mtime_ns": s.mtime_ns,
                       "frames": record.frames}, sort_keys=True)  # fmt: skip


def _name_line(name: str, **flags: bool) -> str:
    return json.dumps({**_texts("name", name), **flags}, sort_keys=True)


def _texts(key: str, value: str) -> dict[str, str]:
    """`{key: value}`, or for a name or path that is not valid UTF-8 (undecodable bytes held
    as lone surrogates), its bytes in base64 under `key_bytes` and a readable `key`: lossless,
    and strict UTF-8 JSON."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(value)
        return {key: raw.decode("utf-8", errors="replace"), f"{key}_bytes": base64.b64encode(raw).decode("ascii")}
    return {key: value}


def _text(entry: Mapping[str, Any], key: str) -> str:
    """The name or path `_texts` stored under `key`."""
    raw = entry.get(f"{key}_bytes")
    if raw is not None:
        return os.fsdecode(base64.b64decode(raw, validate=True))
    value = entry[key]
    if not isinstance(value, str):
        raise InputTypeError(f"{key} is not a string")
    return value


def _same_settings(previous: Mapping[str, Any], settings: Mapping[str, Any]) -> bool:
    return all(previous.get(k) == v for k, v in settings.items() if k not in _INFORMATIONAL)


_INFORMATIONAL = ("weights", "hear_matpac_version")  # recorded, not compared (path: content counts)


def _difference(previous: Optional[Mapping[str, Any]], settings: Mapping[str, Any]) -> str:
    if previous is None:
        return f"no {INFO_FILE}"
    if "format" not in previous:
        return f"{INFO_FILE} from an older hear-matpac that did not record each output's source file"
    there = _flat(previous)
    return "; ".join(f"{k}: {there.get(k)!r} there, {v!r} now" for k, v in _flat(settings).items()
                     if k not in _INFORMATIONAL and there.get(k) != v)  # fmt: skip


def _flat(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings with the model options as keys of their own, for a short difference."""
    flat = {k: v for k, v in settings.items() if k != "model_options"}
    options = settings.get("model_options")
    flat.update(options if isinstance(options, dict) else {"model_options": options})
    return flat


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_json(path, data, sort_keys=True)
