"""Task folders in hear-preprocess's layout: find them, pick some by name, and check each one
before any embedding starts (a malformed folder is one line naming the file and the problem)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, List, Sequence

import soundfile as sf

from ..io import InputError, MissingFile
from ..config import SAMPLE_RATE

REQUIRED_KEYS = ("task_name", "embedding_type", "prediction_type", "split_mode", "evaluation")


def parse_task_names(values: Iterable[str]) -> List[str]:
    """`--tasks` values (repeatable, each comma-separated) -> names, in order, once each."""
    names: List[str] = []
    for value in values:
        for name in (part.strip() for part in str(value).split(",")):
            if name and name not in names:
                names.append(name)
    return names


def _splits(task: Path, meta: dict) -> List[str]:
    splits = meta.get("splits")
    if splits is None:  # hear-preprocess writes splits for k-fold; trainvaltest tasks may omit it
        splits = ["train", "valid", "test"] if meta.get("split_mode") == "trainvaltest" else None
    if not isinstance(splits, list) or not splits or not all(isinstance(s, str) for s in splits):
        raise InputError(f"{task / 'task_metadata.json'}: no list of split names ('splits')")
    return splits


def _json_object(path: Path, missing_means: str, expected: str) -> dict:
    """The JSON object in `path`, or a `ValueError` naming it: missing, unreadable or not `expected`."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: missing ({missing_means})") from None
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not {expected}")
    return data


def check_task(task: Path) -> None:
    """`ValueError` naming the first file that is missing or wrong in `task`."""
    meta_path = task / "task_metadata.json"
    meta = _json_object(meta_path, "not a hear-preprocess task folder", "a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise InputError(f"{meta_path}: missing {', '.join(missing)}")
    vocab = task / "labelvocabulary.csv"
    if not vocab.is_file():
        raise InputError(f"{vocab}: missing")
    with open(vocab) as f:
        if f.readline().strip().split(",")[:2] != ["idx", "label"]:
            raise InputError(f"{vocab}: first line must be idx,label")
    for split in _splits(task, meta):
        labels = task / f"{split}.json"
        data = _json_object(labels, f"split {split!r} of task_metadata.json", "a JSON object of file -> labels")
        audio = task / str(SAMPLE_RATE) / split
        if not audio.is_dir():
            raise InputError(f"{audio}: missing (audio at {SAMPLE_RATE} Hz for split {split!r})")
        absent = [name for name in data if not (audio / name).is_file()]
        if absent:
            raise InputError(f"{audio / absent[0]}: missing ({len(absent)} file(s) of {labels.name} absent)")


def find_tasks(tasks_dir: Path, names: Sequence[str] = ()) -> List[Path]:
    """The task folders of `tasks_dir` (each `*/task_metadata.json`, or any sub-folder when it
    lacks one: it is then reported as malformed), only `names` when given, each checked."""
    root = Path(tasks_dir)
    if not root.is_dir():
        raise MissingFile(f"--tasks-dir {root} is not a folder of HEAR tasks")
    found = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if names:
        known = {p.name for p in found}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InputError(f"--tasks: no task {', '.join(unknown)} in {root}; it holds "
                             f"{', '.join(sorted(known)) or 'no task'}")  # fmt: skip
        found = [p for p in found if p.name in names]
    if not found:
        raise MissingFile(f"{root} holds no task (no */task_metadata.json)")
    for task in found:
        check_task(task)
    return found


def task_audio_seconds(task_dir: Path) -> float:
    """Total duration of the audio heareval embeds: the 16 kHz files of each split (not the
    other sample rates hear-preprocess writes next to them), from the files' headers."""
    return sum(sf.info(str(p)).duration for p in sorted((Path(task_dir) / str(SAMPLE_RATE)).glob("*/*.wav")))


FINGERPRINT_CONTENT_SUFFIXES = (".json", ".csv")  # a task folder's own small files: hashed whole


def task_fingerprint(task_dir: Path) -> str:
    """A sha256 of what a stage reads from a task folder, cheap to compute: the bytes of its
    top-level `.json` and `.csv` files (metadata, label vocabulary, labels per split), and the
    name, size and modification time (ns) of every other top-level file and of every file under
    its 16 kHz audio folder (symbolic links followed). Another folder with the same task name,
    or the same folder edited in place, gives another fingerprint; unchanged files read once
    per run."""
    root = Path(task_dir)
    digest = hashlib.sha256()

    def add(*parts: object) -> None:
        for part in parts:
            digest.update(os.fsencode(part) if isinstance(part, (str, os.PathLike)) else str(part).encode())
            digest.update(b"\0")

    try:
        top = sorted(p for p in root.iterdir() if p.is_file())
    except OSError:
        top = []
    for path in top:
        if path.suffix in FINGERPRINT_CONTENT_SUFFIXES:
            add("content", path.name, hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            stat = path.stat()
            add("file", path.name, stat.st_size, stat.st_mtime_ns)
    audio = root / str(SAMPLE_RATE)
    seen = set()
    for folder, dirs, names in os.walk(audio, followlinks=True):
        stat = os.stat(folder)
        if (stat.st_dev, stat.st_ino) in seen:  # a link cycle: each real folder once
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            try:
                info = path.stat()
            except OSError:  # a dangling link: its name still counts
                add("dangling", path.relative_to(root))
                continue
            add("file", path.relative_to(root), info.st_size, info.st_mtime_ns)
    return digest.hexdigest()
