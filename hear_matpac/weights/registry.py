"""The published MATPAC / MATPAC++ checkpoints by name, and where they are downloaded from.

Pure data: nothing here reads a checkpoint or touches the network; which local file is used
is decided in `weights/locate.py`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional
from urllib.parse import quote

from ..io import InputError


DOWNLOAD_BASE_URL = "https://github.com/aurianworld/matpac/releases/download/"
BASE_URL_ENV = "HEAR_MATPAC_WEIGHTS_BASE_URL"  # a mirror, or a local server in tests
DEFAULT_NAME = "matpac"

_AS_HEAD_NOTE = (
    "AudioSet head: BatchNorm1d without affine + Linear(768, 527) on the time-and-frequency mean "
    "of the 768-d tokens; the HEAR embeddings use the encoder only, `weights export` keeps the head"
)


@dataclass(frozen=True)
class WeightsEntry:
    """One published checkpoint.

    `tag`: GitHub release tag (unquoted); `frames`: log-mel frames of the encoder's window
    (608 = 6.08 s, 992 = 9.92 s); `head`: whether the file holds the AudioSet classification
    head; `sha256`: the published digest, or None (none are published: trust on first use).
    """

    name: str
    model: str
    kind: str
    tag: str
    file: str
    frames: int
    head: bool = False
    notes: str = ""
    sha256: Optional[str] = None

    def url(self, base_url: Optional[str] = None) -> str:
        """Download URL under `base_url` (default: `$HEAR_MATPAC_WEIGHTS_BASE_URL`, else GitHub)."""
        base = base_url or download_base_url()
        return f"{base.rstrip('/')}/{quote(self.tag, safe='')}/{quote(self.file, safe='')}"


REGISTRY: dict[str, WeightsEntry] = {
    e.name: e
    for e in (
        WeightsEntry(
            "matpac", "MATPAC", "self-supervised (AudioSet)", "Initial_release",
            "matpac_10_2048.pt", 608, notes="ICASSP 2025 release; the default weights",
        ),
        WeightsEntry(
            "matpac-plus", "MATPAC++", "self-supervised (AudioSet)", "MATPAC++",
            "matpac_plus_6s_2048_enconly.pt", 608, notes="encoder only",
        ),
        WeightsEntry(
            "matpac-plus-music", "MATPAC++", "self-supervised (music)", "MATPAC++",
            "matpac_plus_music_6s_2048_enconly.pt", 608, notes="encoder only",
        ),
        WeightsEntry(
            "matpac-plus-as", "MATPAC++", "fine-tuned on AudioSet", "MATPAC++",
            "matpac_plus_as_48_1_map_enconly.pt", 992, notes="encoder only",
        ),
        WeightsEntry(
            "matpac-plus-as-head", "MATPAC++", "fine-tuned on AudioSet, with head", "MATPAC++",
            "matpac_plus_as_48_1_map_enc_and_head.pt", 992, head=True, notes=_AS_HEAD_NOTE,
        ),
    )
}  # fmt: skip


def download_base_url() -> str:
    """`$HEAR_MATPAC_WEIGHTS_BASE_URL` if set, else the GitHub releases of aurianworld/matpac."""
    return os.environ.get(BASE_URL_ENV, "") or DOWNLOAD_BASE_URL


def get_entry(name: str) -> WeightsEntry:
    """The entry called `name`; `ValueError` listing the known names otherwise."""
    if name not in REGISTRY:
        raise InputError(f"no published checkpoint named {name!r}; known names: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def markdown_table() -> str:
    """The registry as a Markdown table (what `weights/README.md` shows)."""
    rows = [
        "| name | model | kind | file | frames | head | notes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in REGISTRY.values():
        url = e.url(DOWNLOAD_BASE_URL)
        head = "yes" if e.head else "no"
        rows.append(
            f"| `{e.name}` | {e.model} | {e.kind} | [`{e.file}`]({url}) | {e.frames} | {head} | {e.notes} |"
        )
    return "\n".join(rows) + "\n"
