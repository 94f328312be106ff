"""Progress of a long command in seconds of audio: a bar on a terminal, plain lines in a log.

tqdm draws nothing when stderr is not a terminal (nohup, Slurm), and a bar counting files
stalls on a long file; this counts audio seconds and, off a terminal, prints one plain line
every `PLAIN_EVERY_S` seconds from a ticker thread (whether or not a chunk ended meanwhile,
with the counts as they are then) and one at the end.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Callable, Optional, TextIO, Tuple

from tqdm import tqdm

PLAIN_EVERY_S = 10.0  # off a terminal: one line this often


class AudioProgress:
    """`total` seconds of audio in `files` files to get through. `quiet`: show nothing but
    the lines passed to `write`. `clock` and `wait(timeout) -> stopped` drive the plain lines'
    ticker (tests pass their own; by default `time.monotonic` and a stop event's wait)."""

    def __init__(self, total: float, files: int, prefix: str, quiet: bool = False,
                 stream: Optional[TextIO] = None, every: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic,
                 wait: Optional[Callable[[float], bool]] = None) -> None:  # fmt: skip
        self.stream = stream if stream is not None else sys.stderr
        self.prefix = prefix
        self.total, self.files = total, files
        self.done, self.files_done = 0.0, 0
        self.every = PLAIN_EVERY_S if every is None else every
        self._clock = clock
        self._last = clock()
        self._said: Optional[Tuple[float, int]] = None  # the counts of the last plain line
        self._lock = threading.Lock()  # counts and lines: advanced by callers, read by the ticker
        self._stop = threading.Event()
        terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self._plain = not quiet and not terminal
        self._bar = None
        self._ticker: Optional[threading.Thread] = None
        if not quiet and terminal:
            self._bar = tqdm(total=round(total, 1), unit="s", unit_scale=False, file=self.stream,
                             bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}] {postfix}")  # fmt: skip
        if self._plain:
            self._ticker = threading.Thread(target=self._tick, args=(wait or self._stop.wait,), daemon=True,
                                            name="hear-matpac-progress")  # fmt: skip
            self._ticker.start()

    def advance(self, seconds: float, files: int = 1) -> None:
        """`files` more files done, holding `seconds` of audio."""
        with self._lock:
            self.done += seconds
            self.files_done += files
            if self._bar is not None:
                self._bar.update(seconds)
                self._bar.set_postfix_str(f"{self.files_done}/{self.files} files", refresh=False)

    def _tick(self, wait: Callable[[float], bool]) -> None:
        """The ticker: a plain line whenever `every` seconds have passed since the last one."""
        while not wait(max(0.0, self._last + self.every - self._clock())):
            with self._lock:
                if self._clock() - self._last >= self.every:
                    self._line()

    def _line(self) -> None:
        """One plain line with the counts as they are now (the lock held)."""
        self._last = self._clock()
        self._said = (self.done, self.files_done)
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
        """Stop the ticker and say the final counts (off a terminal, unless just said)."""
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._ticker = None
            with self._lock:
                if self._said != (self.done, self.files_done):
                    self._line()
        if self._bar is not None:
            self._bar.close()
