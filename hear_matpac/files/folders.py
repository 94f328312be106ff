"""Create an output folder (and its parents) with the user's umask, or say in one line why not."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from ..io import InputError


def ensure_folder(path: Union[str, "os.PathLike[str]"], what: str = "--out") -> Path:
    """`path` as a folder, created with its parents when missing. A file in the way (at `path`
    or at a parent) is a `ValueError` naming it; other `OSError`s (read-only, no space) pass."""
    path = Path(path)
    for place in (path, *path.parents):
        if os.path.lexists(place) and not place.is_dir():
            where = "" if place == path else f": {place} is not a folder"
            raise InputError(f"{what} {path} is not a folder{where}; choose a folder")
    path.mkdir(parents=True, exist_ok=True)
    return path
