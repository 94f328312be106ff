"""Where `hear-matpac embed` puts what, written atomically.

For an input named `birds/a.wav` (see `files.inputs`), under the output directory:
`birds/a.wav.scene.npy` (scene embedding, float32 `(scene_embedding_size,)`) and, with
`--timestamps`, `birds/a.wav.frames.npz` (`embeddings` float32 `(T, timestamp_embedding_size)`,
`timestamps` float32 `(T,)` in ms). `embed-info.json` at the top records the settings and
`files.store` the rest of the folder's state.

`save_scene`/`save_frames` write the path they are given, as is: `files.store` gives them a
temporary file beside the output and makes a chunk's files durable and visible together
(one sync, then the renames; see `OutputStore.write`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


SCENE_SUFFIX = ".scene.npy"
FRAMES_SUFFIX = ".frames.npz"
INFO_FILE = "embed-info.json"


@dataclass(frozen=True)
class OutputPaths:
    scene: Path
    frames: Path


def output_paths(out_dir: Path, name: str) -> OutputPaths:
    """The files written for the input named `name`."""
    return OutputPaths(scene=out_dir / f"{name}{SCENE_SUFFIX}", frames=out_dir / f"{name}{FRAMES_SUFFIX}")


def save_scene(path: Path, scene: np.ndarray) -> None:
    """`scene` `(D,)` float32 -> `.npy` at `path` (not synced, not renamed)."""
    with open(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(scene, dtype=np.float32))


def save_frames(path: Path, embeddings: np.ndarray, timestamps: np.ndarray) -> None:
    """`embeddings` `(T, D)`, `timestamps` `(T,)` ms, both float32 -> `.npz` at `path` (not
    synced, not renamed)."""
    with open(path, "wb") as handle:
        np.savez(
            handle,
            embeddings=np.ascontiguousarray(embeddings, dtype=np.float32),
            timestamps=np.ascontiguousarray(timestamps, dtype=np.float32),
        )
