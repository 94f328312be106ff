"""Running the HEAR tools, each in its own process (`python -m hear_matpac.hear_tools ...`,
`hear_tools/__main__.py`, or another environment's interpreter with `foreign_launcher.py`), so
the TensorFlow stand-in and `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD` stay inside the tool that needs
them. A `Tools` object is one run's set of tool processes: `stop()` ends them all from another
thread (an interrupted run), and no tool starts after it. Nothing is kept at module level, so
two runs in one process do not share their tools.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from ..hear_tools.environments import launcher_command, launcher_env
from ..hear_tools.launch import DECLARED_FILE, PLUGIN_MODULE

STOP_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class Stage:
    """One finished stage: its name, wall time, log file (None for in-process stages) and the
    peak resident memory of its process (None for in-process stages)."""

    name: str
    seconds: float
    log: Optional[Path] = None
    peak_rss_mib: Optional[float] = None


class StageFailed(RuntimeError):
    """A HEAR tool exited non-zero; the message names its log."""


try:  # looked up here, not in the child: after fork only the forking thread exists
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the parent's finally still stops the child
    _PRCTL = None


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent thread dies (even by SIGKILL), so no
    HEAR tool goes on writing into --out as an orphan; the tool cleans up on SIGTERM."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Tools:
    """The HEAR tool processes of one run, so that `stop()` (from the main thread, on Ctrl-C or
    SIGTERM) ends them while the threads that started them wait for them."""

    def __init__(self) -> None:
        self._children: Dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Stop every tool running: SIGTERM (each cleans up), SIGKILL after
        `STOP_GRACE_SECONDS`; no tool starts after this."""
        with self._lock:
            self._stopping.set()
            running = list(self._children.values())
            for process in running:
                process.terminate()

        def kill_left() -> None:
            with self._lock:
                for process in running:
                    if process.pid in self._children:
                        process.kill()

        timer = threading.Timer(STOP_GRACE_SECONDS, kill_left)
        timer.daemon = True
        timer.start()

    def run(self, name: str, tool_args: Sequence[str], log: Path, env: Optional[Mapping[str, str]] = None,
                python: str = "") -> Stage:
        """`python -m hear_matpac.hear_tools TOOL_ARGS` (`hear_tools/__main__.py`) with output to `log`; `StageFailed` if it fails.
        `env`: variables set for the tool on top of this process's (its slot's GPU and threads).
        `python`: another environment's interpreter, which runs `PYTHON foreign_launcher.py TOOL_ARGS`
        instead (validate and embed only; see `environments`).
        The tool runs in that one process, so its max RSS (from `wait4`) is the stage's peak memory.
        The child stays in this process group and gets SIGTERM when this process (or the thread that
        started it) dies; `stop()` stops it from another thread; if this thread is
        interrupted (SIGTERM, Ctrl-C), the child is stopped before the error goes on."""
        command = [*launcher_command(python), *tool_args] if python else [sys.executable, "-m", "hear_matpac.hear_tools", *tool_args]
        child_env = launcher_env(env) if python else ({**os.environ, **env} if env else None)
        start = time.perf_counter()
        with open(log, "w") as out:
            out.write("+ " + " ".join(f"{k}={v}" for k, v in (env or {}).items()) + (" " if env else "") + " ".join(command) + "\n")
            out.flush()
            with self._lock:  # one fork at a time, none once the run is stopping
                if self._stopping.is_set():
                    raise StageFailed(f"{name} not started: the run is stopping; log {log}")
                process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
                                           env=child_env)  # fmt: skip
                self._children[process.pid] = process
            try:
                os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped yet:
                with self._lock:  # so `stop` never signals a reaped (reusable) pid
                    self._children.pop(process.pid, None)
                _, wait_status, usage = os.wait4(process.pid, 0)
            except BaseException:
                with self._lock:
                    self._children.pop(process.pid, None)
                process.terminate()
                try:
                    process.wait(timeout=STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                raise
            status = process.returncode = os.waitstatus_to_exitcode(wait_status)
        seconds = time.perf_counter() - start
        if status:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
            raise StageFailed(f"{name} failed (exit {status}) after {seconds:.1f} s; log {log}; its last lines:\n{tail}")
        return Stage(name, seconds, log, usage.ru_maxrss / 1024)  # Linux: ru_maxrss in KiB

    def embed(
        self, weights: Optional[Path], tasks_dir: Path, embeddings_dir: Path, model_options: str, tensorflow: str, log: Path,
        module: str = PLUGIN_MODULE, env: Optional[Mapping[str, str]] = None, python: str = "",
    ) -> tuple[Stage, List[Path]]:
        """heareval's embedding runner on every task in `tasks_dir`; returns the stage and the
        task embedding folders it wrote (`embeddings_dir/<model[-options]>/<task>`). `weights`: None
        for a plugin that takes none (`load_model()`). `env`, `python`: see `run`."""
        model = ["--model", str(weights)] if weights is not None else []
        args = [module, *model, "--tasks-dir", str(tasks_dir),
                "--embeddings-dir", str(embeddings_dir), "--model-options", model_options]  # fmt: skip
        declared = ["--declared", str(Path(embeddings_dir) / DECLARED_FILE)]  # for `check_task_embeddings`
        stage = self.run("embed", ["embed", "--tensorflow", tensorflow, *declared, *args], log, env, python)
        return stage, sorted(p for p in Path(embeddings_dir).glob("*/*") if p.is_dir())


    def predict(
        self, task_dirs: Sequence[Path], grid: str, grid_points: int, log: Path, logs_dir: Optional[Path] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> Stage:
        """heareval's predictions runner on `task_dirs`; its logs/ go to `logs_dir` (kept) or a
        temporary folder. `env`: see `run`."""
        logs = ["--logs-dir", str(logs_dir)] if logs_dir else []
        args = ["--grid", grid, "--grid-points", str(grid_points), *map(str, task_dirs)]
        return self.run("predict", ["predict", *logs, *args], log, env)
