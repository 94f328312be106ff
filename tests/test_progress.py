"""Off a terminal, `AudioProgress` prints a plain line every `every` seconds while work goes on
(not only when a chunk ends), with the counts as they are then, and one at the end."""
from __future__ import annotations

import io
import threading

from hear_matpac.files.progress import AudioProgress


class Script:
    """A clock and the ticker's `wait`: each wait moves the clock on by its timeout, running the
    events (chunks finishing) that fall inside it first; once the clock reaches `until`, the
    wait says "stopped". Everything runs on the ticker thread, so the order is fixed."""

    def __init__(self, events, until):
        self.now, self.events, self.until = 0.0, sorted(events, key=lambda e: e[0]), until
        self.progress = None
        self.ready = threading.Event()

    def clock(self):
        return self.now

    def wait(self, timeout):
        self.ready.wait(30)  # the test has its progress object
        if self.now >= self.until:
            return True
        end = self.now + timeout
        while self.events and self.events[0][0] <= end:
            at, seconds, files = self.events.pop(0)
            self.now = at
            self.progress.advance(seconds, files)
        self.now = end
        return False


def run(events, until, total=100.0, files=10):
    script = Script(events, until)
    stream = io.StringIO()
    progress = AudioProgress(total, files, "embed", stream=stream, every=10.0, clock=script.clock, wait=script.wait)
    script.progress = progress
    script.ready.set()
    progress._ticker.join(30)  # the script has run out
    for _, seconds, files in script.events:  # chunks ending after the ticker's last wait
        progress.advance(seconds, files)
    progress.close()
    return stream.getvalue().splitlines()


def test_a_line_every_ten_seconds_with_current_counts_not_at_chunk_ends():
    lines = run([(4.0, 20.0, 2), (25.0, 30.0, 3), (27.0, 50.0, 5)], until=30.0)
    assert lines == [
        "embed: 20.0 of 100.0 s of audio (20%), 2 of 10 files",  # t=10: no chunk ended then
        "embed: 20.0 of 100.0 s of audio (20%), 2 of 10 files",  # t=20: a long chunk, still alive
        "embed: 100.0 of 100.0 s of audio (100%), 10 of 10 files",  # t=30: both chunks since t=20 counted
    ]  # and no repeat of the last line at the end


def test_a_short_run_says_its_end_once():
    lines = run([(1.0, 60.0, 6), (2.0, 40.0, 4)], until=0.0)
    assert lines == ["embed: 100.0 of 100.0 s of audio (100%), 10 of 10 files"]


def test_quiet_prints_nothing_and_starts_no_thread():
    stream = io.StringIO()
    progress = AudioProgress(10.0, 1, "embed", quiet=True, stream=stream)
    assert progress._ticker is None
    progress.advance(10.0)
    progress.close()
    assert stream.getvalue() == ""
