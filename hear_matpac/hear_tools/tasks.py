"""A small HEAR task suite, generated on the fly at 16 kHz, in hear-preprocess's format.

Four tasks, one per kind of HEAR evaluation: scene multiclass, scene multilabel, sound events
with known onsets, and a 3-fold (`new_split_kfold`) pitch task. Each task folder holds
`task_metadata.json`, `labelvocabulary.csv` (idx,label), one `<split>.json` per split (scene:
file -> [labels]; event: file -> [{label, start, end}] in ms) and mono 16-bit audio at
`16000/<split>/<file>.wav`, every clip exactly `sample_duration` long. Test and demo data,
not a benchmark.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import soundfile as sf

from ..io import current_umask, InputError
from ..config import SAMPLE_RATE
from ..files.folders import ensure_folder
from ..marks import MARK, is_marked, owner_gone
from .synth_audio import SOUNDS, room_noise, sound, tone

SUITE_VERSION = "hear_matpac-synthetic-1"
SAMPLES_PER_MS = SAMPLE_RATE // 1000
PITCH_RANGES_HZ = {"low": (140.0, 220.0), "mid": (330.0, 500.0), "high": (750.0, 1100.0)}
MIXES = tuple(c for k in (1, 2, 3) for c in combinations(SOUNDS, k))  # 7 non-empty subsets

Label = object  # a scene clip's [labels] or an event clip's [{label, start, end}]
ClipMaker = Callable[[int, int, np.random.Generator], Tuple[np.ndarray, Label]]


@dataclass(frozen=True)
class TaskSpec:
    """One task: its metadata, its splits and clips per split, and how a clip is made."""

    name: str
    embedding_type: str
    prediction_type: str
    split_mode: str
    splits: Tuple[str, ...]
    clips_per_split: Tuple[int, ...]
    sample_duration: float
    evaluation: Tuple[str, ...]
    labels: Tuple[str, ...]
    make_clip: ClipMaker  # (clip index, n_samples, rng) -> (audio (n_samples,), label)

    def metadata(self) -> Dict[str, object]:
        meta: Dict[str, object] = {
            "task_name": self.name,
            "version": SUITE_VERSION,
            "embedding_type": self.embedding_type,
            "prediction_type": self.prediction_type,
            "split_mode": self.split_mode,
            "sample_duration": self.sample_duration,
            "evaluation": list(self.evaluation),
            "sample_rates": [SAMPLE_RATE],
            "splits": list(self.splits),
        }
        if self.split_mode.endswith("kfold"):
            meta["nfolds"] = len(self.splits)
        return meta


def _place(n: int, length: int, rng: np.random.Generator) -> int:
    """A start sample, on a whole millisecond, for `length` samples inside `n`."""
    return int(rng.integers(0, (n - length) // SAMPLES_PER_MS + 1)) * SAMPLES_PER_MS


def _scene_multiclass(i: int, n: int, rng: np.random.Generator) -> Tuple[np.ndarray, Label]:
    kind = SOUNDS[i % len(SOUNDS)]
    length = int(n * rng.uniform(0.5, 0.9))
    start = _place(n, length, rng)
    audio = room_noise(n, rng)
    audio[start : start + length] += rng.uniform(0.3, 0.8) * sound(kind, length, rng)
    return audio, [kind]


def _scene_multilabel(i: int, n: int, rng: np.random.Generator) -> Tuple[np.ndarray, Label]:
    kinds = MIXES[i % len(MIXES)]
    audio = room_noise(n, rng)
    for kind in kinds:
        length = int(n * rng.uniform(0.3, 0.7))
        start = _place(n, length, rng)
        audio[start : start + length] += rng.uniform(0.2, 0.5) * sound(kind, length, rng)
    return audio, sorted(kinds)


def _events(i: int, n: int, rng: np.random.Generator) -> Tuple[np.ndarray, Label]:
    """Two or three non-overlapping events, one per equal slot of the clip, each 300-700 ms,
    with silence (room noise) before every onset."""
    n_events = 2 + i % 2
    slot = n // n_events
    audio = room_noise(n, rng)
    events = []
    for k in range(n_events):
        kind = SOUNDS[(i + k) % len(SOUNDS)]
        length = int(rng.integers(300, 701)) * SAMPLES_PER_MS
        start = k * slot + 100 * SAMPLES_PER_MS + _place(slot - 100 * SAMPLES_PER_MS, length, rng)
        audio[start : start + length] += rng.uniform(0.3, 0.8) * sound(kind, length, rng)
        events.append({"label": kind, "start": start / SAMPLES_PER_MS, "end": (start + length) / SAMPLES_PER_MS})
    return audio, events


def _pitch(i: int, n: int, rng: np.random.Generator) -> Tuple[np.ndarray, Label]:
    label = tuple(PITCH_RANGES_HZ)[i % len(PITCH_RANGES_HZ)]
    length = int(n * rng.uniform(0.6, 0.9))
    start = _place(n, length, rng)
    audio = room_noise(n, rng)
    f0 = float(rng.uniform(*PITCH_RANGES_HZ[label]))
    audio[start : start + length] += rng.uniform(0.3, 0.8) * tone(length, rng, f0=f0)
    return audio, [label]


def suite(scale: int = 1) -> Tuple[TaskSpec, ...]:
    """The four task specs; `scale` multiplies the clips per split (1: 126 clips, 150 s)."""
    if not isinstance(scale, int) or scale < 1:
        raise InputError(f"scale must be a positive integer, got {scale!r}")
    tvt = ("train", "valid", "test")
    return (
        TaskSpec("synth_scene_multiclass", "scene", "multiclass", "trainvaltest", tvt,
                 (15 * scale, 6 * scale, 6 * scale), 1.0, ("top1_acc", "mAP"), SOUNDS,
                 _scene_multiclass),
        TaskSpec("synth_scene_multilabel", "scene", "multilabel", "trainvaltest", tvt,
                 (14 * scale, 7 * scale, 7 * scale), 1.0, ("mAP", "d_prime", "aucroc"), SOUNDS,
                 _scene_multilabel),
        TaskSpec("synth_events", "event", "multilabel", "trainvaltest", tvt,
                 (12 * scale, 6 * scale, 6 * scale), 3.0,
                 ("event_onset_200ms_fms", "event_onset_50ms_fms", "segment_1s_er"), SOUNDS, _events),
        TaskSpec("synth_pitch_3fold", "scene", "multiclass", "new_split_kfold",
                 ("fold00", "fold01", "fold02"), (6 * scale,) * 3, 1.0, ("top1_acc",),
                 tuple(PITCH_RANGES_HZ), _pitch),
    )  # fmt: skip


def _mark(seed: int, scale: int) -> str:
    return json.dumps({"made_by": "hear-matpac make-tasks", "version": SUITE_VERSION, "seed": seed, "scale": scale})


def write_task(spec: TaskSpec, task_dir: Path, seed: int, scale: int = 1) -> None:
    """Write one task folder (which must not exist yet), with hear-matpac's mark in it."""
    task_dir.mkdir(parents=True)
    (task_dir / MARK).write_text(_mark(seed, scale))
    n = round(spec.sample_duration * SAMPLE_RATE)
    rng = np.random.default_rng([seed, sum(map(ord, spec.name))])
    (task_dir / "task_metadata.json").write_text(json.dumps(spec.metadata(), indent=4))
    with open(task_dir / "labelvocabulary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["idx", "label"])
        writer.writerows(enumerate(spec.labels))
    for split, count in zip(spec.splits, spec.clips_per_split):
        audio_dir = task_dir / str(SAMPLE_RATE) / split
        audio_dir.mkdir(parents=True)
        labels = {}
        for i in range(count):
            audio, label = spec.make_clip(i, n, rng)
            peak = np.max(np.abs(audio))
            audio = audio * (rng.uniform(0.5, 0.9) / peak)
            name = f"{split}-{i:03d}.wav"
            sf.write(audio_dir / name, audio, SAMPLE_RATE, subtype="PCM_16")
            labels[name] = label
        (task_dir / f"{split}.json").write_text(json.dumps(labels, indent=4))


def suite_matches(out_dir: Path, scale: int = 1, tasks: Sequence[str] = (), seed: int = 0) -> bool:
    """True when `out_dir` holds exactly the suite `write_suite(out_dir, seed, scale, tasks=tasks)`
    writes, as marked by it."""
    out = Path(out_dir)
    if not out.is_dir():
        return False
    want = sorted(s.name for s in suite(scale) if not tasks or s.name in tasks)
    entries = sorted(out.iterdir())
    if [p.name for p in entries] != want:
        return False
    try:
        return all(json.loads((p / MARK).read_text()) == json.loads(_mark(seed, scale)) for p in entries)
    except (OSError, ValueError):
        return False


def _made_by_us(out: Path) -> bool:
    """Every entry of `out` is a task folder bearing hear-matpac's mark."""
    return all(is_marked(p) for p in out.iterdir())


def remove_stale_partials(parent: Path, name: str) -> None:
    """Remove `.NAME.partial-HOST-PID-*` folders of killed runs (same host, pid gone)."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.partial-(.+)-(\d+)-[^-]+$")
    for entry in parent.glob(f".{name}.partial-*"):
        found = pattern.match(entry.name)
        if found and entry.is_dir() and owner_gone({"host": found.group(1), "pid": int(found.group(2))}):
            shutil.rmtree(entry, ignore_errors=True)


def write_suite(
    out_dir: os.PathLike | str, seed: int = 0, scale: int = 1, overwrite: bool = False,
    tasks: Sequence[str] = (),
) -> List[Path]:
    """Write the suite's task folders into `out_dir` (nothing else goes there, as heareval's
    `--tasks-dir` expects) and return their paths. Written to a temporary folder and renamed,
    so `out_dir` is complete or absent; folders get the umask's mode; each task folder holds
    hear-matpac's mark. `overwrite` replaces an existing `out_dir` (through a symlink: the folder
    it points to) only when hear-matpac made everything in it. Two runs at once: the later one
    never removes what the other finished (`FileExistsError`). Temporary folders of killed
    runs are removed. `tasks`: names to keep (default all)."""
    out = Path(out_dir)
    specs = suite(scale)
    known = [s.name for s in specs]
    unknown = sorted(set(tasks) - set(known))
    if unknown:
        raise InputError(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    if os.path.lexists(out) and not overwrite:
        raise InputError(f"{out} already exists; choose a new folder or pass overwrite (--overwrite)")
    if out.is_symlink():  # replace the folder it points to; the link stays
        out = Path(os.path.realpath(out))
    if os.path.lexists(out) and not out.is_dir():
        raise InputError(f"{out} is a file, not a folder of tasks; remove it or choose a folder")
    replaced = None
    if out.is_dir():
        if not _made_by_us(out):
            raise InputError(f"{out} holds files hear-matpac did not make; it is left alone: choose a new folder")
        replaced = os.stat(out).st_ino
    ensure_folder(out.parent, f"cannot create {out_dir}:")
    remove_stale_partials(out.parent, out.name)
    prefix = f".{out.name}.partial-{socket.gethostname()}-{os.getpid()}-"
    partial = Path(tempfile.mkdtemp(prefix=prefix, dir=out.parent))
    try:
        os.chmod(partial, 0o777 & ~current_umask())  # mkdtemp makes it 0700
        for spec in specs:
            if not tasks or spec.name in tasks:
                write_task(spec, partial / spec.name, seed, scale)
        if replaced is not None and out.is_dir() and os.stat(out).st_ino == replaced:
            shutil.rmtree(out)  # the folder seen and checked above, not another run's newer one
        try:
            partial.rename(out)
        except OSError as err:
            if os.path.lexists(out):
                raise FileExistsError(f"{out} was written by another run meanwhile; it is kept") from None
            raise err
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return sorted(Path(out_dir) / p.name for p in out.iterdir())
