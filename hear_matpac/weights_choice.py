"""Which weights a demo or benchmark run uses when the user names none."""
from __future__ import annotations

import sys
from pathlib import Path

from .checkpoint import resolve_weights_path

TINY_UNTRAINED = Path(__file__).resolve().parent / "assets" / "tiny_untrained.pt"


def best_available_weights(path: str = "") -> Path:
    """`path`, else `$HEAR_MATPAC_WEIGHTS`, else `weights/matpac_10_2048.pt`, else the bundled
    tiny untrained checkpoint, with a loud warning on stderr."""
    try:
        return resolve_weights_path(path)
    except FileNotFoundError as err:
        banner = "!" * 78
        print(
            f"{banner}\nWARNING: using the bundled TINY UNTRAINED stand-in checkpoint "
            f"({TINY_UNTRAINED.name}).\nIts embeddings and scores mean nothing about MATPAC.\n{err}\n{banner}",
            file=sys.stderr,
        )
        return TINY_UNTRAINED
