"""Embeddings written by a HEAR plugin, checked before heareval's predictions runner reads them.

heareval 2021.1.3's embedding runner writes, in each task folder, per split and audio file,
`<split>/<file>.embedding.npy` as the plugin returned it (scene: `(scene_embedding_size,)`;
event: `(T, timestamp_embedding_size)`, with `<split>/<file>.timestamps.json`, T times in ms),
then copies them, cast to float32, into `<split>.embeddings.npy`. It checks little of it: NaN,
another dtype or another size than the plugin declares goes on to the predictions runner, which
fails deep in pytorch-lightning or scores garbage. Here each file is checked (float32, the
declared size, finite, timestamps finite and increasing) and the first problem is one line.

The declared sizes are what the model that wrote the embeddings says (`load_model` with the
stage's weights and options, in the embedding runner's process): `hear_tools.launch.record_declared`
writes them to `DECLARED_FILE`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..hear_tools.launch import DECLARED_FILE, SIZES  # noqa: F401 (DECLARED_FILE: where the sizes are)
from ..io import InputError



class BadEmbeddings(InputError):
    """The embeddings of a task folder fail the check; the message is one line."""


def read_declared(path: Path) -> Dict[str, int]:
    """The declared sizes in `path` (written by `record_declared`); `BadEmbeddings` if absent or
    not whole numbers."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise BadEmbeddings(f"the embedding runner left no record of the sizes the plugin declares "
                            f"({path}: {err})") from None
    sizes = {}
    for name in SIZES:
        value = data.get(name) if isinstance(data, dict) else None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadEmbeddings(f"the plugin declares {name} {value!r}, not a positive whole number")
        sizes[name] = value
    return sizes


def _timestamps_problem(path: Path, rows: int) -> Optional[str]:
    try:
        times = np.asarray(json.loads(path.read_text()), dtype=np.float64)
    except (OSError, ValueError, TypeError) as err:
        return f"{path.name}: not a list of numbers ({err})"
    if times.shape != (rows,):
        return f"{path.name}: {times.size} timestamps for {rows} embeddings"
    if not np.isfinite(times).all():
        return f"{path.name}: {int((~np.isfinite(times)).sum())} timestamps are NaN or infinite"
    steps = np.diff(times)
    if (steps <= 0).any():
        at = int(np.argmax(steps <= 0)) + 1
        return f"{path.name}: timestamps not increasing ({times[at]:g} ms after {times[at - 1]:g} ms)"
    return None


def file_problem(folder: Path, name: str, kind: str, size: int) -> Optional[str]:
    """What is wrong with `folder/<name>.embedding.npy` (and, for an event task, its
    `<name>.timestamps.json`) of a task of `kind` ("scene" or "event") whose plugin declares
    `size`: the file's name and its problem, or None when nothing is wrong."""
    path = folder / f"{name}.embedding.npy"
    if not path.is_file():
        return f"{path.name}: missing"
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        return f"{path.name}: not a readable .npy array ({err})"
    if not isinstance(array, np.ndarray):
        return f"{path.name}: not a .npy array"
    if array.dtype != np.float32:
        return f"{path.name}: dtype {array.dtype}, not float32"
    want = "(scene_embedding_size,)" if kind == "scene" else "(T, timestamp_embedding_size)"
    ndim = 1 if kind == "scene" else 2
    if array.ndim != ndim or array.shape[-1] != size or array.size == 0:
        return f"{path.name}: shape {array.shape}, not {want} with the declared size {size}"
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        return f"{path.name}: {bad} of {array.size} values are NaN or infinite"
    if kind == "event":
        return _timestamps_problem(folder / f"{name}.timestamps.json", array.shape[0])
    return None


def check_task_embeddings(task_dir: Path, declared_file: Path) -> None:
    """Check every embedding file of one task folder written by heareval's embedding runner
    against the sizes in `declared_file`; `BadEmbeddings` naming the first bad file and its
    problem, and how many files have one."""
    task_dir = Path(task_dir)
    sizes = read_declared(declared_file)
    try:
        metadata = json.loads((task_dir / "task_metadata.json").read_text())
        kind = metadata["embedding_type"]
        splits = {split: json.loads((task_dir / f"{split}.json").read_text()) for split in metadata["splits"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BadEmbeddings(f"{task_dir}: the task's metadata or splits are not readable ({err})") from None
    if kind not in ("scene", "event"):
        raise BadEmbeddings(f"{task_dir}: unknown embedding_type {kind!r}")
    size = sizes["scene_embedding_size" if kind == "scene" else "timestamp_embedding_size"]
    problems: List[str] = []
    for split, files in splits.items():
        for name in files:
            problem = file_problem(task_dir / split, name, kind, size)
            if problem:
                problems.append(f"{split}/{problem}")
    if problems:
        more = f" ({len(problems)} files have problems)" if len(problems) > 1 else ""
        raise BadEmbeddings(" ".join(f"embeddings rejected before predictions: {problems[0]}{more}".split()))
