"""Where `hear-matpac embed` puts what, written atomically.

For an input named `birds/a.wav` (see `file_inputs`), under the output directory:
`birds/a.wav.scene.npy` (scene embedding, float32 `(scene_embedding_size,)`) and, with
`--timestamps`, `birds/a.wav.frames.npz` (`embeddings` float32 `(T, timestamp_embedding_size)`,
`timestamps` float32 `(T,)` in ms). `embed-info.json` at the top records the weights and model
options, so that a later run cannot silently mix embeddings of different settings.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .atomic import atomic_write

SCENE_SUFFIX = ".scene.npy"
FRAMES_SUFFIX = ".frames.npz"
INFO_FILE = "embed-info.json"
# Settings that change the numbers; a run must match the ones already in its output directory.
_RESULT_SETTINGS = ("weights", "model_options")


@dataclass(frozen=True)
class OutputPaths:
    scene: Path
    frames: Path


def output_paths(out_dir: Path, name: str) -> OutputPaths:
    """The files written for the input named `name`."""
    return OutputPaths(scene=out_dir / f"{name}{SCENE_SUFFIX}", frames=out_dir / f"{name}{FRAMES_SUFFIX}")


def save_scene(path: Path, scene: np.ndarray) -> None:
    """`scene` `(D,)` float32 -> `.npy`."""
    with atomic_write(path) as handle:
        np.save(handle, np.ascontiguousarray(scene, dtype=np.float32))


def save_frames(path: Path, embeddings: np.ndarray, timestamps: np.ndarray) -> None:
    """`embeddings` `(T, D)`, `timestamps` `(T,)` ms, both float32 -> `.npz`."""
    with atomic_write(path) as handle:
        np.savez(
            handle,
            embeddings=np.ascontiguousarray(embeddings, dtype=np.float32),
            timestamps=np.ascontiguousarray(timestamps, dtype=np.float32),
        )


def claim_output_dir(out_dir: Path, info: Mapping[str, Any], overwrite: bool) -> None:
    """Record `info` in `out_dir/embed-info.json`. Refuse (`ValueError`) when the directory
    already holds embeddings made with other weights or model options, unless `overwrite`."""
    path = out_dir / INFO_FILE
    if path.is_file() and not overwrite:
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"{path} is unreadable ({err}); delete it or pass --overwrite") from None
        changed = [k for k in _RESULT_SETTINGS if previous.get(k) != info.get(k)]
        if changed:
            detail = "; ".join(f"{k}: {previous.get(k)!r} there, {info.get(k)!r} now" for k in changed)
            raise ValueError(
                f"{out_dir} holds embeddings made with other settings ({detail}); "
                "use another --out, or --overwrite to recompute"
            )
    with atomic_write(path) as handle:
        handle.write((json.dumps(info, indent=2, sort_keys=True) + "\n").encode("utf-8"))
