"""Embed audio files into an output folder, keeping the device busy: worker processes decode
the next chunk of files while this one is embedded (`decode`), the clips of a chunk are embedded
in one call whatever their lengths (`api.embed_packed`: windows of one length share encoder
micro-batches), chunks are sized by their audio (`batching.plan_chunks`: thousands of
audio-seconds a call on CUDA), a call's outputs are read back (pinned copies and an event, its
check's one device read) only after the next call is queued, so the device never waits for the
host's bookkeeping, and one background thread writes the outputs while the next chunk is embedded.
When a chunk's call fails, each of its files is tried alone to find the culprit; the tally is
kept.

Nothing is written for a file that fails (unreadable audio, a `ValueError` of the HEAR API
such as non-finite audio, non-finite embeddings); an error while *writing* (disk full,
read-only folder) or a failed device (out of memory for one file, a CUDA error) ends the run,
since every later file would meet it too. A file counts as embedded (tally, progress) once its
outputs are written and recorded.
"""
from __future__ import annotations

import os
import stat
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import soundfile
import torch
from torch import Tensor

from ..version import __version__
from ..api import embed_packed
from ..batching import frame_budget, plan_chunks
from ..finite_checks import PendingCheck, deferred_checks
from ..io import first_line, InputError
from ..config import FRAMES_PER_SECOND, SAMPLE_RATE
from .decode import DecodedChunk, decoded_chunks, default_workers
from .inputs import InputFile
from ..model import MatpacModel
from ..options import result_options
from ..windows import device_event, to_host, upload
from .store import Need, OutputStore, Source
from .outputs import FRAMES_SUFFIX, SCENE_SUFFIX
from .progress import AudioProgress
from ..weights.integrity import weights_sha256

# What embedding one group may raise for a reason of its own files (a bad clip, too little
# memory for the group); anything else is a bug or an error of the run as a whole, and so is
# a failed device (`device_failure`).
_FILE_ERRORS = (ValueError, TypeError, RuntimeError)
# ModelOptions fields that change the numbers (max_windows and cpu_packed_weights do not).
_DEVICE_ERRORS = ("CUDA error", "CUBLAS_STATUS", "CUDNN_STATUS", "device-side assert")
# Audio decoded by one worker at a time (a piece of a call): the calls are much longer on CUDA.
DECODE_SECONDS = 256.0


def device_failure(err: BaseException, files: int) -> Optional[str]:
    """Why the run cannot go on after `err` embedding `files` files at once, or None when it is
    about those files: every later file would meet a failed device, or memory too small for
    one file (a larger group is retried one file at a time first)."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        if files > 1:
            return None
        return (f"out of device memory for a single file ({first_line(err)}); lower --batch-size, "
                "use --precision bf16 or fp16, free the GPU, or use --device cpu")  # fmt: skip
    accelerator = getattr(torch, "AcceleratorError", ())
    if (accelerator and isinstance(err, accelerator)) or any(m in str(err) for m in _DEVICE_ERRORS):
        return f"the device failed ({first_line(err)}); later files cannot be embedded on it"
    return None


@dataclass(frozen=True)
class Job:
    """One input to embed: the file, its identity when planned, the outputs it needs, and its
    length in seconds for the progress display (0 when unknown)."""

    item: InputFile
    source: Source
    need: Need
    seconds: float = 0.0


@dataclass
class Tally:
    embedded: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)


Output = tuple[np.ndarray, Optional[tuple[np.ndarray, np.ndarray]]]  # scene, (embeddings, timestamps)


def audio_seconds(path: object) -> float:
    """The length of an audio file from its header, 0 when it cannot be read (it fails later)
    or is no regular file (a named pipe would block the read)."""
    try:
        if not stat.S_ISREG(os.stat(str(path)).st_mode):
            return 0.0
        return float(soundfile.info(os.fsencode(path)).duration)  # bytes: a name that is not UTF-8 too
    except Exception:  # noqa: BLE001 - only an estimate for the progress display
        return 0.0


class FileEmbedder:
    """Embeds jobs with `model` on `device` into `store`, reporting through `progress`.
    `workers`: decoding processes (None: `decode.default_workers`)."""

    def __init__(self, model: MatpacModel, device: torch.device, store: OutputStore,
                 progress: AudioProgress, prefix: str, workers: Optional[int] = None) -> None:  # fmt: skip
        self.model, self.device, self.store = model, device, store
        self.progress, self.prefix, self.workers = progress, prefix, workers
        self.tally = Tally()
        self._lock = threading.Lock()  # tally and progress: also updated by the writer thread

    def fail(self, what: str, problem: str, seconds: float = 0.0) -> None:
        """Count `what` as failed and say why."""
        with self._lock:
            self.tally.failed.append(what)
            self.progress.write(f"{self.prefix}: failed: {what}: {problem}")
            self.progress.advance(seconds)

    def run(self, jobs: Sequence[Job]) -> Tally:
        """Embed `jobs`, in calls planned by their audio (`batching.plan_chunks`); each call's
        outputs are read back after the next call is queued."""
        if not jobs:
            return self.tally
        seconds = [job.seconds or audio_seconds(job.item.path) for job in jobs]
        calls = plan_chunks(seconds, self.device.type, self._budget_seconds())
        pieces, call_of = decode_pieces(calls, seconds)
        cuda = self.device.type == "cuda"
        workers = default_workers(len(jobs), len(pieces), cuda) if self.workers is None else self.workers
        chunks = decoded_chunks([job.source for job in jobs], pieces, workers, cuda)
        with BackgroundWriter() as writer:
            pending: Optional[_Queued] = None
            for call in _calls(_loaded(chunks, workers), call_of):
                pending = self._chunk(jobs, call, pending, writer)
            self._finish(pending, writer)
        return self.tally

    def _budget_seconds(self) -> float:
        """The audio of one encoder batch budget on this device (`batching.frame_budget`)."""
        options = self.model.options
        budget = frame_budget(self.model.encoder.config, options.max_windows, options.precision, self.device)
        return budget / FRAMES_PER_SECOND

    def _chunk(self, jobs: Sequence[Job], pieces: list[DecodedChunk], pending: Optional["_Queued"],
               writer: "BackgroundWriter") -> Optional["_Queued"]:  # fmt: skip
        """Queue the decoded files of one call's `pieces` in one call, then read back `pending`
        (the call before); return this call, to be read back after the next one is queued. When
        queueing fails, `pending` is read back first (its memory freed), then each file is tried
        alone."""
        for piece in pieces:
            for index, problem in piece.failed:
                self.fail(str(jobs[index].item.path), problem, jobs[index].seconds)
        pieces = [piece for piece in pieces if piece.indices]
        if not pieces:
            return pending
        group = [(jobs[i], clip) for p in pieces for i, clip in zip(p.indices, p.audio.split(p.lengths))]
        lengths = [n for p in pieces for n in p.lengths]
        problem = queued = None
        try:
            queued = self._queue(self._on_device(pieces), lengths, group)
        except _FILE_ERRORS as err:
            _stop_on_device_failure(err, group)
            problem = first_line(err)
        self._finish(pending, writer)
        if problem is not None:  # outside the handler: the failed call's frames and memory are gone
            self._retry(group, problem, writer)
        return queued

    def _on_device(self, pieces: list[DecodedChunk]) -> Tensor:
        """The audio of a call's `pieces` on the device: each piece copied there (from pinned
        memory, without waiting), joined there. In a function of its own so that when the join
        fails (out of memory), the pieces' copies go with its frame, before the retry."""
        on_device = [upload(p.audio, self.device) for p in pieces]
        return on_device[0] if len(on_device) == 1 else torch.cat(on_device)

    def _finish(self, queued: Optional["_Queued"], writer: "BackgroundWriter") -> None:
        """Read back `queued` and hand its outputs to the writer; when its call failed late
        (non-finite embeddings found by its check, an error the device reports at the read),
        its own files are tried alone."""
        if queued is None:
            return
        group, problem = queued.group, None
        try:
            outputs = queued.read()
        except _FILE_ERRORS as err:
            _stop_on_device_failure(err, group)
            problem = first_line(err)
        queued.release()
        if problem is None:
            writer.submit(self._write, group, outputs)
        else:
            self._retry(group, problem, writer)

    def _retry(self, group: list[tuple[Job, Tensor]], problem: str, writer: "BackgroundWriter") -> None:
        """After `group`'s call failed with `problem`: each file alone, to find the culprit."""
        if len(group) == 1:
            self.fail(str(group[0][0].item.path), problem, group[0][0].seconds)
            return
        for member in group:
            self._one(member, writer)

    def _one(self, member: tuple[Job, Tensor], writer: "BackgroundWriter") -> None:
        try:
            outputs = self._queue(upload(member[1], self.device), [len(member[1])], [member]).read()
        except _FILE_ERRORS as err:
            _stop_on_device_failure(err, [member])
            self.fail(str(member[0].item.path), first_line(err), member[0].seconds)
            return
        writer.submit(self._write, [member], outputs)

    def _queue(self, on_device: Tensor, lengths: Sequence[int], group: list[tuple[Job, Tensor]]) -> "_Queued":
        """Queue the embedding of `group`'s clips, end to end in `on_device` (the audio on the
        device), in one call, with the copies of its outputs to the host; nothing waits for the
        device (on CUDA). The API's `ValueError` for non-finite audio or embeddings comes at
        `_Queued.read`."""
        frames = any(job.need.frames for job, _ in group)
        with deferred_checks() as checks:
            results = embed_packed(on_device, lengths, self.model, timestamps=frames)
        check, = checks
        scene = to_host(torch.stack([r.scene for r in results]))
        if not frames:
            return _Queued(group, check, scene, None, None, [], device_event(self.device))
        embeddings = to_host(torch.cat([r.embeddings for r in results]))
        times = to_host(torch.cat([r.timestamps for r in results]))
        rows = [len(r.timestamps) for r in results]
        return _Queued(group, check, scene, embeddings, times, rows, device_event(self.device))

    def _write(self, group: list[tuple[Job, Tensor]], outputs: list[Output]) -> None:
        """On the writer thread: write and record `group`'s outputs, then count them."""
        self.store.write(
            (job.item.name, job.source, job.need, scene, frames) for (job, _), (scene, frames) in zip(group, outputs)
        )
        with self._lock:
            self.tally.embedded += len(group)
            self.progress.advance(sum(job.seconds for job, _ in group), len(group))


@dataclass
class _Queued:
    """One call queued on the device: its files, its pending check and its outputs being copied
    to the host (complete once `event` has passed; None on the CPU)."""

    group: list[tuple[Job, Tensor]]
    check: PendingCheck
    scene: Optional[Tensor]
    embeddings: Optional[Tensor]
    timestamps: Optional[Tensor]
    rows: list[int]
    event: Optional[Any]

    def read(self) -> list[Output]:
        """Wait for the call (its one device read) and raise as the API would; each clip's
        scene and (when computed) frames as NumPy arrays. One wait: `event`, recorded after the
        check's summary was queued for the host on the same stream, covers it too, so the
        check finds its own event passed."""
        if self.event is not None:
            self.event.synchronize()
        self.check.result()
        scene = self.scene.numpy()
        if self.embeddings is None:
            return [(row, None) for row in scene]
        embeddings = np.split(self.embeddings.numpy(), np.cumsum(self.rows)[:-1])
        times = np.split(self.timestamps.numpy(), np.cumsum(self.rows)[:-1])
        return [(row, (e, t)) for row, e, t in zip(scene, embeddings, times)]

    def release(self) -> None:
        """Let go of the call's tensors (before its files are retried one at a time)."""
        self.scene = self.embeddings = self.timestamps = None


class BackgroundWriter:
    """One thread running submitted writes in order, at most `depth` behind the caller, so the
    device computes the next outputs while these are written. A write's error is raised in the
    caller (at its next `submit`, or on leaving the `with` block); the writes after a failed
    one are not run."""

    def __init__(self, depth: int = 2) -> None:
        self.depth = depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hear-matpac-writer")
        self._pending: Deque[Future] = deque()
        self._failed = threading.Event()

    def submit(self, write: Callable[..., None], *args: Any) -> None:
        """Queue `write(*args)`; wait while `depth` writes are queued; raise a write's error."""
        while self._pending and (self._pending[0].done() or len(self._pending) >= self.depth):
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._guarded, write, args))

    def _guarded(self, write: Callable[..., None], args: tuple) -> None:
        if self._failed.is_set():
            return
        try:
            write(*args)
        except BaseException:
            self._failed.set()
            raise

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, kind: Optional[type], value: Optional[BaseException], tb: Any) -> None:
        """Wait for the queued writes (also when the caller failed: what was computed is kept);
        raise the first write error, unless the caller's own error is on its way."""
        self._pool.shutdown(wait=True)
        pending, self._pending = self._pending, deque()
        if kind is None:
            for future in pending:
                future.result()


def decode_pieces(calls: Sequence[Sequence[int]], seconds: Sequence[float]) -> Tuple[List[List[int]], List[int]]:
    """Each call's files cut into consecutive pieces of about `DECODE_SECONDS` of audio, decoded
    one piece per worker at a time (a call of thousands of seconds keeps every worker busy and
    its first piece ready early); and the call each piece belongs to."""
    pieces, call_of = [], []
    for number, call in enumerate(calls):
        for part in plan_chunks([seconds[i] for i in call], "cpu", DECODE_SECONDS):
            pieces.append([call[j] for j in part])
            call_of.append(number)
    return pieces, call_of


def _calls(pieces: Iterable[DecodedChunk], call_of: Sequence[int]) -> Iterator[list[DecodedChunk]]:
    """The decoded `pieces`, in order, gathered into their calls (`call_of[k]`: piece k's)."""
    current: list[DecodedChunk] = []
    number = None
    for k, piece in enumerate(pieces):
        if current and call_of[k] != number:
            yield current
            current = []
        number = call_of[k]
        current.append(piece)
    if current:
        yield current


def _loaded(chunks: Iterable[DecodedChunk], workers: int) -> Iterator[DecodedChunk]:
    """`chunks`, with a decoding process that died (not a file's error: those are data) said
    in one line."""
    iterator = iter(chunks)
    while True:
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        except RuntimeError as err:
            if not workers or "DataLoader worker" not in str(err):
                raise
            raise InputError(f"a decoding process died ({first_line(err)}); rerun with --decode-workers 0 to decode "
                             "in the main process") from err  # fmt: skip
        yield chunk


def _stop_on_device_failure(err: BaseException, group: Sequence[tuple[Job, torch.Tensor]]) -> None:
    """End the run (a one-line `ValueError` naming the file) when `err` is `device_failure`'s."""
    problem = device_failure(err, len(group))
    if problem is not None:
        raise InputError(f"stopped at {group[0][0].item.path}: {problem}") from err


def plan_jobs(files: Sequence[InputFile], store: OutputStore, timestamps: bool, overwrite: bool,
              measure: bool = True) -> Tuple[List[Job], int, List[Tuple[str, str]]]:  # fmt: skip
    """The jobs to run, how many files are skipped, and (path, problem) for files gone since
    they were listed. A name recorded from another file is refused here, before any decoding."""
    jobs, skipped, missing, collisions = [], 0, [], []
    for item in files:
        try:
            source = Source.of(item.path)
        except OSError as err:
            missing.append((str(item.path), err.strerror or first_line(err)))
            continue
        problem = store.collision(item.name, source)
        if problem is not None and not overwrite:
            collisions.append(problem)
            continue
        need = store.need(item.name, source, timestamps, overwrite)
        if need.scene or need.frames:
            jobs.append(Job(item, source, need, audio_seconds(item.path) if measure else 0.0))
        else:
            skipped += 1
    if collisions:
        more = f" ({len(collisions) - 1} more name(s) like it)" if len(collisions) > 1 else ""
        raise InputError(
            f"{collisions[0]}{more}: use another --out, embed the inputs from a folder holding both "
            "(names then keep their subfolders), or --overwrite to replace the older outputs"
        )
    return jobs, skipped, missing


def folder_settings(weights: Path, model: MatpacModel) -> Dict[str, Any]:
    """What the folder's outputs depend on: the weights' content and the options that change
    the numbers, as the model normalised them (defaults given explicitly equal omitted ones)."""
    options = model.options
    return {
        "hear_matpac_version": __version__,
        "weights": str(weights.resolve()),
        # the digest of the very bytes loaded; hashed again only for a mapped, unrecorded file
        "weights_sha256": model.weights_sha256 or weights_sha256(weights),
        "model_options": result_options(options),
        "sample_rate": SAMPLE_RATE,
        "scene_embedding_size": model.scene_embedding_size,
        "timestamp_embedding_size": model.timestamp_embedding_size,
        "scene_suffix": SCENE_SUFFIX,
        "frames_suffix": FRAMES_SUFFIX,
    }
