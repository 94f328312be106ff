"""Progress of a long command in seconds of audio: a bar on a terminal, plain lines in a log.

tqdm draws nothing when stderr is not a terminal (nohup, Slurm), and a bar counting files
stalls on a long file; this counts audio seconds and, off a terminal, prints one plain line
every few seconds instead.
"""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

from tqdm import tqdm

PLAIN_EVERY_S = 10.0  # off a terminal: one line at most this often


class AudioProgress:
    """`total` seconds of audio in `files` files to get through. `quiet`: show nothing but
    the lines passed to `write`."""

    def __init__(self, total: float, files: int, prefix: str, quiet: bool = False,
                 stream: Optional[TextIO] = None, every: Optional[float] = None) -> None:  # fmt: skip
        self.stream = stream if stream is not None else sys.stderr
        self.prefix = prefix
        self.total, self.files = total, files
        self.done, self.files_done = 0.0, 0
        self.every = PLAIN_EVERY_S if every is None else every
        self._last = time.monotonic()
        terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self._plain = not quiet and not terminal
        self._bar = None
        if not quiet and terminal:
            self._bar = tqdm(total=round(total, 1), unit="s", unit_scale=False, file=self.stream,
                             bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}] {postfix}")  # fmt: skip

    def advance(self, seconds: float, files: int = 1) -> None:
        """`files` more files done, holding `seconds` of audio."""
        self.done += seconds
        self.files_done += files
        if self._bar is not None:
            self._bar.update(seconds)
            self._bar.set_postfix_str(f"{self.files_done}/{self.files} files", refresh=False)
        elif self._plain and time.monotonic() - self._last >= self.every:
            self._last = time.monotonic()
            share = 100.0 * self.done / self.total if self.total > 0 else 100.0
            print(f"{self.prefix}: {self.done:.1f} of {self.total:.1f} s of audio ({share:.0f}%), "
                  f"{self.files_done} of {self.files} files", file=self.stream, flush=True)  # fmt: skip

    def write(self, line: str) -> None:
        """Print `line` on its own line (above the bar, if there is one)."""
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
