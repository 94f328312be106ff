"""Ctrl-C (SIGINT to the whole foreground process group, as a terminal sends it) during `embed`
and `evaluate`: one line on stderr, exit 130, no traceback. Each command runs in a session of
its own, and is interrupted at a point known to lie inside its run (an output written, a HEAR
tool running): the group is stopped there, sent SIGINT, and let go on. (Never stopped between a
fork and its exec: a child stopped there holds up its parent, which Ctrl-C does not do.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

from hear_matpac.weights.locate import TINY_UNTRAINED

from conftest import need

REPO = Path(__file__).resolve().parents[1]


def _start(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hear_matpac.cli", *args], cwd=cwd, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _interrupt_when(child: subprocess.Popen, seen: Callable[[], bool]) -> tuple[int, str]:
    """Wait until `seen()` (the run is under way), stop the child's process group, send it
    SIGINT, let it go on; its exit status and stderr."""
    try:
        while not seen():
            assert child.poll() is None, f"ended (exit {child.returncode}) before the point: {child.communicate()}"
            time.sleep(0.02)
        os.killpg(child.pid, signal.SIGSTOP)  # nothing moves on between the point and the signal
        os.killpg(child.pid, signal.SIGINT)
        os.killpg(child.pid, signal.SIGCONT)
        _, err = child.communicate(timeout=120)
        return child.returncode, err
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def test_ctrl_c_in_embed_is_one_line_and_exit_130(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    t = np.arange(16000 * 2) / 16000
    for n in range(40):  # far more files than can be embedded between the point and the stop
        sf.write(audio / f"clip{n:02d}.wav", (0.1 * np.sin(2 * np.pi * (200 + 10 * n) * t)).astype(np.float32), 16000)
    out = tmp_path / "emb"
    child = _start("embed", str(audio), "--out", str(out), "--weights", str(TINY_UNTRAINED), "--quiet",
                   "--batch-size", "1", "--decode-workers", "0", cwd=tmp_path)  # fmt: skip
    status, err = _interrupt_when(child, lambda: any(out.glob("*.scene.npy")))
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 130, err
    assert lines[-1] == "hear-matpac embed: interrupted", err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert len(list(out.glob("*.scene.npy"))) < 40  # it was stopped inside the run


def _validator_log(out: Path) -> str:
    """hear-validator's log so far: its first line of its own (which `tensorflow` it imports)
    shows that it runs, exec'd; no process of the run is between fork and exec when stopped."""
    return "".join(p.read_text(errors="replace") for p in out.glob("runs/*/validate.*.log"))


def test_ctrl_c_in_evaluate_is_one_line_and_exit_130(tmp_path):
    need("hearvalidator", "the HEAR tools")
    out = tmp_path / "out"
    child = _start("evaluate", "--out", str(out), "--weights", str(TINY_UNTRAINED), "--no-chart", "--tasks",
                   "synth_scene_multiclass", "--grid-points", "1", "--tensorflow", "stand-in", cwd=tmp_path)  # fmt: skip
    status, err = _interrupt_when(child, lambda: "`import tensorflow` gives" in _validator_log(out))
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 130, err
    assert lines == ["hear-matpac evaluate: interrupted"], err
    assert not list(out.glob("runs/*/*.claim"))
