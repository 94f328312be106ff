"""Embed audio files into an output folder, keeping the device busy: worker processes decode
the next chunk of files while this one is embedded (`decode`), the clips of a chunk are embedded
in one call whatever their lengths (`api.embed_packed`: windows of one length share encoder
micro-batches), and one background thread writes the outputs while the next chunk is embedded.
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
from ..io import first_line, InputError
from ..config import SAMPLE_RATE
from .decode import DecodedChunk, decoded_chunks, default_workers
from .inputs import InputFile
from ..model import MatpacModel
from ..options import result_options
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

    def run(self, jobs: Sequence[Job], batch_size: int) -> Tally:
        """Embed `jobs`, `batch_size` files decoded and embedded at a time."""
        if not jobs:
            return self.tally
        workers = default_workers(len(jobs)) if self.workers is None else self.workers
        chunks = decoded_chunks([job.source for job in jobs], batch_size, workers, self.device.type == "cuda")
        with BackgroundWriter() as writer:
            for chunk in _loaded(chunks, workers):
                self._chunk(jobs, chunk, writer)
        return self.tally

    def _chunk(self, jobs: Sequence[Job], chunk: DecodedChunk, writer: "BackgroundWriter") -> None:
        """Embed `chunk`'s decoded files in one call; when it fails, each file alone."""
        for index, problem in chunk.failed:
            self.fail(str(jobs[index].item.path), problem, jobs[index].seconds)
        if not chunk.indices:
            return
        group = [(jobs[i], clip) for i, clip in zip(chunk.indices, chunk.audio.split(chunk.lengths))]
        problem = None
        try:
            outputs = self._compute(chunk.audio, chunk.lengths, group)
        except _FILE_ERRORS as err:
            _stop_on_device_failure(err, group)
            problem = first_line(err)
        if problem is None:
            writer.submit(self._write, group, outputs)
        elif len(group) == 1:
            self.fail(str(group[0][0].item.path), problem, group[0][0].seconds)
        else:  # find the culprit: one file at a time, outside the handler, so that the failed
            for member in group:  # call's traceback, and the device memory its frames hold, is gone
                self._one(member, writer)

    def _one(self, member: tuple[Job, Tensor], writer: "BackgroundWriter") -> None:
        try:
            outputs = self._compute(member[1], [len(member[1])], [member])
        except _FILE_ERRORS as err:
            _stop_on_device_failure(err, [member])
            self.fail(str(member[0].item.path), first_line(err), member[0].seconds)
            return
        writer.submit(self._write, [member], outputs)

    def _compute(self, audio: Tensor, lengths: Sequence[int], group: list[tuple[Job, Tensor]]) -> list[Output]:
        """Embed the clips of `group`, end to end in `audio`, in one call; each one's scene and
        (when any needs them) frames, on the CPU. The API raises ValueError for non-finite
        audio or embeddings."""
        frames = any(job.need.frames for job, _ in group)
        results = embed_packed(audio, lengths, self.model, timestamps=frames)
        return [(r.scene.numpy(), (r.embeddings.numpy(), r.timestamps.numpy()) if frames else None) for r in results]

    def _write(self, group: list[tuple[Job, Tensor]], outputs: list[Output]) -> None:
        """On the writer thread: write and record `group`'s outputs, then count them."""
        self.store.write(
            (job.item.name, job.source, job.need, scene, frames) for (job, _), (scene, frames) in zip(group, outputs)
        )
        with self._lock:
            self.tally.embedded += len(group)
            self.progress.advance(sum(job.seconds for job, _ in group), len(group))


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
