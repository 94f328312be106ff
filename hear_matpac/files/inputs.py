"""Turn `embed`'s PATH arguments (files, directories, glob patterns) into a list of audio files,
each with a relative name that its outputs mirror."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator, Sequence

from .audio import AUDIO_EXTENSIONS

_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class InputFile:
    """`path`: the file to read. `name`: its path relative to the inputs' common base
    directory, POSIX style (e.g. `birds/a.wav`); outputs are named after it."""

    path: Path
    name: str


@dataclass(frozen=True)
class BadArgument:
    """A PATH argument that names nothing readable, and why."""

    argument: str
    problem: str


def collect_inputs(arguments: Sequence[str]) -> tuple[list[InputFile], list[BadArgument]]:
    """Expand `arguments` in order, without duplicates.

    A file is taken whatever its extension; a directory is scanned recursively for files with
    an audio extension (`AUDIO_EXTENSIONS`), hidden entries skipped; an argument that is neither
    is expanded as a glob pattern (`**` recursive), matches treated as above. Names are relative
    to the deepest directory holding every argument (a directory argument counts as itself, a
    file as its parent), so distinct files always get distinct names.
    """
    found: list[Path] = []
    bases: list[str] = []
    bad: list[BadArgument] = []
    for argument in arguments:
        path = Path(argument).expanduser()
        if path.is_dir() or path.is_file():
            matches = [path]
        elif path.exists():  # a named pipe, a device: reading it could block or never end
            bad.append(BadArgument(argument, "not a regular file or a folder"))
            matches = []
        elif any(c in argument for c in _GLOB_CHARS):
            matches = [Path(m) for m in sorted(glob.glob(os.path.expanduser(argument), recursive=True))]
            if not matches:
                bad.append(BadArgument(argument, "no file matches this pattern"))
        else:
            bad.append(BadArgument(argument, "no such file or directory"))
            matches = []
        for match in matches:
            if match.is_dir():
                bases.append(os.path.abspath(match))
                found.extend(_audio_files_under(match))
            elif match.is_file():
                bases.append(os.path.dirname(os.path.abspath(match)))
                found.append(match)
    if not found:
        return [], bad
    base = os.path.commonpath(bases)
    return list(_named(_unique(found), base)), bad


def _audio_files_under(directory: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                yield Path(root) / name


def _unique(paths: Iterable[Path]) -> Iterator[Path]:
    seen = set()
    for path in paths:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            yield path


def _named(paths: Iterable[Path], base: str) -> Iterator[InputFile]:
    for path in paths:
        relative = os.path.relpath(os.path.abspath(path), base)
        yield InputFile(path=path, name=str(PurePosixPath(*Path(relative).parts)))
