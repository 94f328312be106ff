"""The bundled tiny untrained checkpoint, and when a demo or benchmark run may fall back to it."""
from __future__ import annotations

import sys
from pathlib import Path

from .weights_locate import PathLike, named_weights, resolve_weights_path

TINY_UNTRAINED = Path(__file__).resolve().parent / "assets" / "tiny_untrained.pt"


def best_available_weights(path: PathLike = "") -> Path:
    """`resolve_weights_path(path)`; only when nothing is named (no `path`, no
    `$HEAR_MATPAC_WEIGHTS`) and the default checkpoint is not found, the bundled tiny untrained
    checkpoint, with a loud warning on stderr. A named file or checkpoint that is not there is
    the `FileNotFoundError` of `resolve_weights_path`, never the stand-in."""
    if named_weights(path):
        return resolve_weights_path(path)
    try:
        return resolve_weights_path("")
    except FileNotFoundError as err:
        banner = "!" * 78
        print(
            f"{banner}\nWARNING: using the bundled TINY UNTRAINED stand-in checkpoint "
            f"({TINY_UNTRAINED.name}).\nIts embeddings and scores mean nothing about MATPAC.\n{err}\n{banner}",
            file=sys.stderr,
        )
        return TINY_UNTRAINED
