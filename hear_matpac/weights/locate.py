"""Which weights file is used: the one place that decides.

Order: what the caller names (a `--weights` flag or `load_model`'s argument), else
`$HEAR_MATPAC_WEIGHTS`; either one is an existing file or a published checkpoint's name
(`registry.REGISTRY`). A name is looked up in the weights folders (`search_dirs`). When nothing
is named, the default checkpoint (`matpac`) is looked up there. Whatever was named is found or
is a `FileNotFoundError` saying how to fetch it: only "nothing named" may fall back to anything
else (`best_available_weights`, the bundled tiny untrained checkpoint). Nothing here reads a checkpoint.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional, Union

from ..io import MissingFile
from .registry import DEFAULT_NAME, REGISTRY, WeightsEntry, get_entry

PathLike = Union[str, "os.PathLike[str]"]

WEIGHTS_ENV = "HEAR_MATPAC_WEIGHTS"  # a file or a published name: what to load when none is given
WEIGHTS_DIR_ENV = "HEAR_MATPAC_WEIGHTS_DIR"  # where `weights fetch` writes and names are looked up


def weights_help(fallback: bool = False) -> str:
    """The one sentence every `--weights` help and docstring uses. `fallback`: the command
    runs the bundled tiny untrained checkpoint when nothing is named or found."""
    default = REGISTRY[DEFAULT_NAME].file
    sentence = (
        f"checkpoint file or published name (hear-matpac weights list); default: ${WEIGHTS_ENV}, "
        f"else {default} in ${WEIGHTS_DIR_ENV}, ./weights or the repository's weights/"
    )
    if fallback:
        sentence += "; with nothing named and nothing found, the bundled tiny UNTRAINED checkpoint (with a warning)"
    return sentence


def repo_weights_dir() -> Path:
    """`weights/` beside the package (the repository's, for an editable install)."""
    return Path(__file__).resolve().parents[2] / "weights"


def default_fetch_dir() -> Path:
    """Where `weights fetch` writes: `$HEAR_MATPAC_WEIGHTS_DIR`, else `./weights`."""
    return Path(os.environ.get(WEIGHTS_DIR_ENV, "") or "weights").expanduser()


def search_dirs() -> list[Path]:
    """Folders searched for a named checkpoint, in order: `$HEAR_MATPAC_WEIGHTS_DIR` (if set),
    `./weights`, the repository's `weights/`."""
    dirs = [Path(os.environ[WEIGHTS_DIR_ENV]).expanduser()] if os.environ.get(WEIGHTS_DIR_ENV) else []
    return dirs + [Path("weights"), repo_weights_dir()]


def find_local(entry: WeightsEntry) -> Optional[Path]:
    """The first existing copy of `entry`'s file in `search_dirs()`, or None."""
    for folder in search_dirs():
        candidate = folder / entry.file
        if candidate.is_file():
            return candidate
    return None


def local_copies() -> str:
    """The published checkpoints as a text table, each with the local copy found of it ('-':
    none), and how to fetch one (what `hear-matpac weights list` prints)."""
    lines = [f"{'name':<20} {'model':<9} {'frames':>6}  {'kind':<34} local copy"]
    for entry in REGISTRY.values():
        lines.append(f"{entry.name:<20} {entry.model:<9} {entry.frames:>6}  {entry.kind:<34} {find_local(entry) or '-'}")
    return "\n".join(lines) + "\n\nfetch one with: hear-matpac weights fetch NAME [--dir DIR]\n"


def locate(name: str, source: str = "") -> Path:
    """The local file of the checkpoint called `name`; `FileNotFoundError` saying how to fetch
    it. `source` says where the name came from (e.g. `$HEAR_MATPAC_WEIGHTS`), for the message."""
    entry = get_entry(name)
    found = find_local(entry)
    if found is None:
        looked = ", ".join(str(d / entry.file) for d in search_dirs())
        origin = f" (named by {source})" if source else ""
        raise MissingFile(
            f"checkpoint {name!r}{origin} is not downloaded (looked at {looked}); "
            f"fetch it with: hear-matpac weights fetch {name}"
        )
    return found


def named_weights(path: PathLike = "") -> str:
    """What the caller named: `path`, else `$HEAR_MATPAC_WEIGHTS`, else "" (nothing named)."""
    return str(path) or os.environ.get(WEIGHTS_ENV, "")


def resolve_weights_path(path: PathLike = "") -> Path:
    """The file to load for `path` (see the module's docstring for the order).

    An existing file wins over a published name it happens to share. A named file that does
    not exist, or a name not downloaded, is a `FileNotFoundError` (never another file)."""
    given = named_weights(path)
    source = "" if str(path) else f"${WEIGHTS_ENV}"
    if given:
        candidate = Path(given).expanduser()
        if candidate.exists():
            return candidate
        if given in REGISTRY:
            return locate(given, source)
        origin = f" (named by {source})" if source else ""
        raise MissingFile(
            f"{given}{origin}: no such checkpoint file, nor a published checkpoint's name "
            f"({', '.join(REGISTRY)}; see `hear-matpac weights list`)"
        )
    entry = REGISTRY[DEFAULT_NAME]
    found = find_local(entry)
    if found is not None:
        return found
    looked = " / ".join(str(d / entry.file) for d in search_dirs())
    raise MissingFile(
        f"No MATPAC weights given and none found: ${WEIGHTS_ENV} is not set and {looked} do not "
        f"exist. Fetch the published checkpoint with `hear-matpac weights fetch {DEFAULT_NAME}` "
        f"(from {entry.url()}), or pass a file or a name from `hear-matpac weights list`."
    )


TINY_UNTRAINED = Path(__file__).resolve().parents[1] / "assets" / "tiny_untrained.pt"
# The one sentence that says so, wherever output came from the stand-in.
TINY_UNTRAINED_WARNING = (
    f"come from the bundled TINY UNTRAINED stand-in checkpoint ({TINY_UNTRAINED.name}) and mean nothing about MATPAC"
)


def tiny_untrained_warning(weights: PathLike, what: str = "scores") -> None:
    """Say on stderr that `what` came from the tiny untrained stand-in (only when `weights` is it)."""
    if Path(weights) == TINY_UNTRAINED:
        print(f"\nWARNING: these {what} {TINY_UNTRAINED_WARNING}. Put real weights in weights/ or "
              f"${WEIGHTS_ENV}.", file=sys.stderr)  # fmt: skip


def best_available_weights(path: PathLike = "", announce: bool = True) -> Path:
    """`resolve_weights_path(path)`; only when nothing is named (no `path`, no
    `$HEAR_MATPAC_WEIGHTS`) and the default checkpoint is not found, the bundled tiny untrained
    checkpoint, with a loud warning on stderr (`announce=False`: none yet; the caller checks
    its options first, then calls `announce_stand_in`). A named file or checkpoint that is not
    there is the `FileNotFoundError` of `resolve_weights_path`, never the stand-in."""
    if named_weights(path):
        return resolve_weights_path(path)
    try:
        return resolve_weights_path("")
    except FileNotFoundError:
        if announce:
            announce_stand_in(TINY_UNTRAINED)
        return TINY_UNTRAINED


def announce_stand_in(weights: PathLike) -> None:
    """The loud banner on stderr that this run uses the tiny untrained stand-in, and why (only
    when `weights` is it)."""
    if Path(weights) != TINY_UNTRAINED:
        return
    try:
        resolve_weights_path("")
        why = ""
    except FileNotFoundError as err:
        why = f"{err}\n"
    banner = "!" * 78
    print(f"{banner}\nWARNING: the embeddings and scores of this run {TINY_UNTRAINED_WARNING}.\n{why}{banner}",
          file=sys.stderr)  # fmt: skip
