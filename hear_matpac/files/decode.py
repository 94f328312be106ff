"""Decode audio files for `embed` ahead of the model: a `torch.utils.data.DataLoader` whose
worker processes read and resample the files (`audio.read_audio`), a chunk of files at a time,
while the main process embeds the chunk before.

Each file is read from the absolute path recorded when the run listed it, and only while its
size and modification time are still those recorded (`Source`): a file that changed since, or
that is another file on this machine (a rank of a torchrun job elsewhere), fails instead of
being embedded under the record of another.

A chunk comes packed as `api.embed_packed` takes it: the clips end to end in one tensor (pinned
when the model is on CUDA, so the copy to the device does not make the host wait) and their
lengths. A file that cannot be decoded is in the chunk's `failed`, never an exception that would
end the loader. The DataLoader gives each worker one torch thread, so workers do not compete
with the encoder's threads, and keeps `prefetch_factor` chunks per worker decoded ahead.

A worker hands its chunk over in shared memory when it can. Where the chunk does not fit there
(Docker's 64 MB `/dev/shm`, a `ulimit -f` below the chunk's size), torch would print the error in
the worker and drop the chunk, and the run would wait for it forever: the worker tries shared
memory itself, and on failure sends the samples through the worker's pipe instead. A worker
also lets go of the folder's lock files that it inherited (`store.forget_locks_in_child`), so
one outliving its killed parent does not hold the folder.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, get_worker_info

from ..io import first_line
from .audio import AudioFileError, read_audio
from .store import Source, forget_locks_in_child

PREFETCH = 2  # chunks decoded ahead, per worker
CPU_WORKERS = 1  # decoding processes by default when the model runs on the CPU


@dataclass
class DecodedChunk:
    """Some consecutive files of the list: `indices` (positions in the list) of the decoded
    ones, their clips end to end in `audio` `(samples,)` float32 16 kHz, `lengths` in samples;
    `failed`: (position, problem) of those that could not be decoded."""

    indices: list[int]
    audio: Tensor
    lengths: list[int]
    failed: list[tuple[int, str]]

    def pin_memory(self) -> "DecodedChunk":
        """Called by the DataLoader's pinning thread (`pin_memory=True`)."""
        self.audio = self.audio.pin_memory()
        return self

    def __setstate__(self, state: dict) -> None:
        """Unpickled in the main process: samples sent through the pipe (`_handed_over`) become
        a tensor again."""
        audio = state["audio"]
        self.__dict__.update(state, audio=torch.from_numpy(audio) if isinstance(audio, np.ndarray) else audio)


def default_workers(n_files: int, n_chunks: int, cuda: bool = False,
                    env: Optional[Mapping[str, str]] = None) -> int:  # fmt: skip
    """Decoding processes for `n_files` files decoded in `n_chunks` chunks.

    None for a single file (a worker costs more than it saves); never more than there are
    chunks. On CUDA, the cores this device may use (`device_cores`) but one, kept for the process
    that feeds the device and writes the outputs: one core decodes a few thousand audio-seconds
    per second, the encoder tens of thousands (docs/performance.md). On CPU, `CPU_WORKERS`:
    the encoder's threads need the cores, and one core decodes far faster than all the others
    encode."""
    if n_files <= 1:
        return 0
    workers = max(1, device_cores(env) - 1) if cuda else CPU_WORKERS
    return min(workers, n_chunks)


def device_cores(env: Optional[Mapping[str, str]] = None) -> int:
    """The cores of one device of this job: the CPUs this process may use, shared by the
    processes of a torchrun job on this machine (`LOCAL_WORLD_SIZE`) when each of them may use
    the whole machine; a process bound to its own cores (Slurm's per-task binding) has them to
    itself."""
    env = os.environ if env is None else env
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        local = max(1, int(env.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    if local > 1 and cpus >= (os.cpu_count() or cpus):
        return max(1, cpus // local)
    return cpus


def decoded_chunks(sources: Sequence[Source], chunks: Union[int, Sequence[Sequence[int]]], workers: int,
                   pin_memory: bool) -> Iterable[DecodedChunk]:  # fmt: skip
    """The files of `sources` decoded in order, by `workers` processes (0: in this process, when
    iterated), `chunks` files at a time, or in the given chunks (positions, as
    `batching.plan_chunks` plans them)."""
    sized = {"batch_size": chunks, "shuffle": False} if isinstance(chunks, int) else {"batch_sampler": chunks}
    return DataLoader(
        _Files(list(sources)), **sized, collate_fn=_pack, num_workers=workers,
        pin_memory=pin_memory, prefetch_factor=PREFETCH if workers else None,
        worker_init_fn=_worker_started if workers else None,
    )  # fmt: skip


def _worker_started(worker: int) -> None:
    forget_locks_in_child()


class _Files(Dataset):
    """Position i -> (i, samples or None, problem or None): a decoding error is data."""

    def __init__(self, sources: list[Source]) -> None:
        self.sources = sources

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> tuple[int, Optional[Tensor], Optional[str]]:
        source = self.sources[i]
        try:
            problem = changed(source)
            if problem:
                return i, None, problem
            return i, read_audio(source.path).samples, None
        except (AudioFileError, OSError, ValueError, RuntimeError) as err:  # this file's problem, not the run's
            return i, None, getattr(err, "problem", None) or first_line(err)


def changed(source: Source) -> Optional[str]:
    """Why the file at `source.path` is not the one recorded in `source` (None when it is).
    `OSError` when it cannot be looked at."""
    now = os.stat(source.path)
    if not stat.S_ISREG(now.st_mode):
        return "not a regular file"
    if (now.st_size, now.st_mtime_ns) != (source.size, source.mtime_ns):
        return ("changed since this run listed it (size or modification time differ; in a "
                f"torchrun job, every rank must see the same file at {source.path}); run again")  # fmt: skip
    return None


def _pack(items: list[tuple[int, Optional[Tensor], Optional[str]]]) -> DecodedChunk:
    decoded = [(i, samples) for i, samples, _ in items if samples is not None]
    audio = torch.cat([s for _, s in decoded]) if decoded else torch.empty(0)
    return DecodedChunk([i for i, _ in decoded], _handed_over(audio), [len(s) for _, s in decoded],
                        [(i, problem) for i, samples, problem in items if samples is None])  # fmt: skip


def _handed_over(audio: Tensor) -> "Tensor | np.ndarray":
    """`audio` as a worker sends it to the main process: in shared memory when it fits there,
    else as a NumPy array, which the pipe carries (see the module's docstring). In the main
    process, unchanged."""
    if get_worker_info() is None or audio.numel() == 0:
        return audio
    try:
        audio.share_memory_()
    except (RuntimeError, OSError):  # "unable to allocate shared memory(shm) ...", "File too large"
        return audio.numpy()
    return audio

