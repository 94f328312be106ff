"""The main job: hear-validator and both heareval runners on the synthetic task suite.

Each HEAR tool runs in its own process (`python -m hear_matpac.hear_tools ...`), so the TensorFlow
stand-in and `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD` stay inside the tool that needs them; its
output goes to `<out>/<stage>.log`, and its wall time is measured around the process.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from ..files.folders import ensure_folder
from ..reports.results import TaskScore, read_scores
from .launch import PLUGIN_MODULE
from .tasks import write_suite

GRIDS = ("default", "fast", "faster")


def check_grid(grid: str, grid_points: int) -> None:
    """heareval's grid name and grid points per task, checked before any stage runs."""
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {', '.join(GRIDS)}, got {grid!r}")
    if grid_points < 1:
        raise ValueError(f"grid_points must be at least 1, got {grid_points}")


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


def run_tool(name: str, tool_args: Sequence[str], log: Path) -> Stage:
    """`python -m hear_matpac.hear_tools TOOL_ARGS` (`hear_tools/__main__.py`) with output to `log`; `StageFailed` if it fails.
    The tool runs in that one process, so its max RSS (from `wait4`) is the stage's peak memory."""
    command = [sys.executable, "-m", "hear_matpac.hear_tools", *tool_args]
    start = time.perf_counter()
    with open(log, "w") as out:
        out.write("+ " + " ".join(command) + "\n")
        out.flush()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, wait_status, usage = os.wait4(process.pid, 0)
        status = process.returncode = os.waitstatus_to_exitcode(wait_status)
    seconds = time.perf_counter() - start
    if status:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise StageFailed(f"{name} failed (exit {status}) after {seconds:.1f} s; last lines of {log}:\n{tail}")
    return Stage(name, seconds, log, usage.ru_maxrss / 1024)  # Linux: ru_maxrss in KiB


def embed_stage(
    weights: Path, tasks_dir: Path, embeddings_dir: Path, model_options: str, tensorflow: str, log: Path
) -> tuple[Stage, List[Path]]:
    """heareval's embedding runner on every task in `tasks_dir`; returns the stage and the
    task embedding folders it wrote (`embeddings_dir/<model[-options]>/<task>`)."""
    args = [PLUGIN_MODULE, "--model", str(weights), "--tasks-dir", str(tasks_dir),
            "--embeddings-dir", str(embeddings_dir), "--model-options", model_options]  # fmt: skip
    stage = run_tool("embed", ["embed", "--tensorflow", tensorflow, *args], log)
    return stage, sorted(p for p in Path(embeddings_dir).glob("*/*") if p.is_dir())


def predict_stage(
    task_dirs: Sequence[Path], grid: str, grid_points: int, log: Path, logs_dir: Optional[Path] = None
) -> Stage:
    """heareval's predictions runner on `task_dirs`; its logs/ go to `logs_dir` (kept) or a
    temporary folder."""
    logs = ["--logs-dir", str(logs_dir)] if logs_dir else []
    args = ["--grid", grid, "--grid-points", str(grid_points), *map(str, task_dirs)]
    return run_tool("predict", ["predict", *logs, *args], log)


def evaluate(
    weights: Path,
    out_dir: Path,
    grid: str = "faster",
    grid_points: int = 8,
    scale: int = 1,
    tensorflow: str = "auto",
    model_options: str = "{}",
    keep_logs: bool = False,
    report: Callable[[str], None] = print,
) -> tuple[List[Stage], List[TaskScore]]:
    """Write the task suite to `out_dir/tasks`, validate, embed into `out_dir/embeddings`,
    predict; return the stages' wall times and the test scores. Replaces only `tasks/`,
    `embeddings/` and `logs/` under `out_dir`."""
    check_grid(grid, grid_points)
    if not isinstance(json.loads(model_options), dict):
        raise ValueError(f"model options must be a JSON object, got {model_options!r}")
    out = ensure_folder(out_dir)
    for owned in ("tasks", "embeddings", "logs"):
        shutil.rmtree(out / owned, ignore_errors=True)
    stages = []

    start = time.perf_counter()
    task_dirs = write_suite(out / "tasks", scale=scale)
    stages.append(Stage("make tasks", time.perf_counter() - start))
    report(f"[1/4] wrote {len(task_dirs)} tasks to {out / 'tasks'} ({stages[-1].seconds:.1f} s)")

    tf = ["--tensorflow", tensorflow]
    stages.append(run_tool("validate", ["validate", str(weights), *tf], out / "validate.log"))
    report(f"[2/4] hear-validator passed ({stages[-1].seconds:.1f} s, log {stages[-1].log})")

    stage, embedded = embed_stage(weights, out / "tasks", out / "embeddings", model_options, tensorflow,
                                  out / "embed.log")  # fmt: skip
    stages.append(stage)
    report(f"[3/4] heareval embeddings runner done ({stages[-1].seconds:.1f} s, log {stages[-1].log})")

    stages.append(predict_stage(embedded, grid, grid_points, out / "predict.log",
                                out / "logs" if keep_logs else None))  # fmt: skip
    report(f"[4/4] heareval predictions runner done ({stages[-1].seconds:.1f} s, log {stages[-1].log})")

    scores = [row for task in embedded for row in read_scores(task)]
    return stages, scores
