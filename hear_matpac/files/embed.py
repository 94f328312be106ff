"""Embed audio files into an output folder: read them a chunk at a time, embed the files of
one length together, find the culprit when such a call fails, and keep the tally.

Nothing is written for a file that fails (unreadable audio, a `ValueError` of the HEAR API
such as non-finite audio, non-finite embeddings); an error while *writing* (disk full,
read-only folder) or a failed device (out of memory for one file, a CUDA error) ends the run,
since every later file would meet it too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile
import torch

from .. import __version__
from ..api import get_scene_and_timestamp_embeddings, get_scene_embeddings
from ..config import SAMPLE_RATE
from .audio import AudioFileError, read_audio
from .inputs import InputFile
from ..model import MatpacModel
from .store import Need, OutputStore, Source
from .outputs import FRAMES_SUFFIX, SCENE_SUFFIX
from .progress import AudioProgress
from ..weights.integrity import weights_sha256

# What embedding one group may raise for a reason of its own files (a bad clip, too little
# memory for the group); anything else is a bug or an error of the run as a whole, and so is
# a failed device (`device_failure`).
_FILE_ERRORS = (ValueError, TypeError, RuntimeError)
# ModelOptions fields that change the numbers (max_windows and cpu_packed_weights do not).
RESULT_OPTIONS = ("layer", "timestamp_hop_ms", "window_overlap", "window_seconds", "precision")
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
    """The length of an audio file from its header, 0 when it cannot be read (it fails later)."""
    try:
        return float(soundfile.info(str(path)).duration)
    except Exception:  # noqa: BLE001 - only an estimate for the progress display
        return 0.0


class FileEmbedder:
    """Embeds jobs with `model` on `device` into `store`, reporting through `progress`."""

    def __init__(self, model: MatpacModel, device: torch.device, store: OutputStore,
                 progress: AudioProgress, prefix: str) -> None:  # fmt: skip
        self.model, self.device, self.store = model, device, store
        self.progress, self.prefix = progress, prefix
        self.tally = Tally()

    def fail(self, what: str, problem: str, seconds: float = 0.0) -> None:
        """Count `what` as failed and say why."""
        self.tally.failed.append(what)
        self.progress.write(f"{self.prefix}: failed: {what}: {problem}")
        self.progress.advance(seconds)

    def run(self, jobs: Sequence[Job], batch_size: int) -> Tally:
        """Embed `jobs`, `batch_size` files read at a time."""
        for first in range(0, len(jobs), batch_size):
            self._chunk(jobs[first:first + batch_size])
        return self.tally

    def _chunk(self, chunk: Sequence[Job]) -> None:
        """Read `chunk`, then embed its files of equal length together (the HEAR API takes
        clips of one length per call; padding would change the embeddings)."""
        by_length: dict[int, list[tuple[Job, torch.Tensor]]] = {}
        for job in chunk:
            try:
                clip = read_audio(job.item.path)
            except (AudioFileError, OSError) as err:
                self.fail(str(job.item.path), getattr(err, "problem", None) or first_line(err), job.seconds)
                continue
            by_length.setdefault(clip.samples.shape[0], []).append((job, clip.samples))
        for group in by_length.values():
            try:
                outputs = self._compute(group)
            except _FILE_ERRORS as err:
                _stop_on_device_failure(err, group)
                if len(group) == 1:
                    self.fail(str(group[0][0].item.path), first_line(err), group[0][0].seconds)
                else:  # find the culprit: one file at a time
                    for member in group:
                        self._one(member)
                continue
            self._write(group, outputs)

    def _one(self, member: tuple[Job, torch.Tensor]) -> None:
        try:
            outputs = self._compute([member])
        except _FILE_ERRORS as err:
            _stop_on_device_failure(err, [member])
            self.fail(str(member[0].item.path), first_line(err), member[0].seconds)
            return
        self._write([member], outputs)

    def _compute(self, group: list[tuple[Job, torch.Tensor]]) -> list[Output]:
        """Embed clips of one length in one call; each one's scene and (when needed) frames,
        on the CPU. The API raises ValueError for non-finite audio or embeddings."""
        audio = torch.stack([samples for _, samples in group]).to(self.device)  # (clips, samples)
        if any(job.need.frames for job, _ in group):
            scene_t, emb_t, ts_t = get_scene_and_timestamp_embeddings(audio, self.model)
            frames: Optional[tuple[np.ndarray, np.ndarray]] = (emb_t.cpu().numpy(), ts_t.cpu().numpy())
        else:
            scene_t, frames = get_scene_embeddings(audio, self.model), None
        scene = scene_t.cpu().numpy()
        return [(scene[i], None if frames is None else (frames[0][i], frames[1][i])) for i in range(len(group))]

    def _write(self, group: list[tuple[Job, torch.Tensor]], outputs: list[Output]) -> None:
        self.store.write(
            (job.item.name, job.source, job.need, scene, frames) for (job, _), (scene, frames) in zip(group, outputs)
        )
        self.tally.embedded += len(group)
        self.progress.advance(sum(job.seconds for job, _ in group), len(group))


def _stop_on_device_failure(err: BaseException, group: Sequence[tuple[Job, torch.Tensor]]) -> None:
    """End the run (a one-line `ValueError` naming the file) when `err` is `device_failure`'s."""
    problem = device_failure(err, len(group))
    if problem is not None:
        raise ValueError(f"stopped at {group[0][0].item.path}: {problem}") from err


def first_line(err: BaseException) -> str:
    """The first line of an error's message, or its type's name."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


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
        raise ValueError(
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
        "model_options": {name: getattr(options, name) for name in RESULT_OPTIONS},
        "sample_rate": SAMPLE_RATE,
        "scene_embedding_size": model.scene_embedding_size,
        "timestamp_embedding_size": model.timestamp_embedding_size,
        "scene_suffix": SCENE_SUFFIX,
        "frames_suffix": FRAMES_SUFFIX,
    }
