"""Stand-ins for the HEAR tools behind `tools.Tools.run`, for tests of `evaluate`'s and
`sweep`'s run folders (what is reused, removed, tabulated) that need no heareval run.

Each tool writes at once, in the calling process, the files that the real tool leaves and that
`evaluate` and `sweep` read: hear-validator nothing; the embedding runner one folder per task
(`<embeddings>/<module>/<task>/` with the task's metadata and `profile.embeddings.json`); the
predictions runner `test.predicted-scores.json` (every metric of the task). A task's score is `task_score(task_dir,
options)`, computed from the task folder itself (its labelled clips), so a test can tell which
task folder a score came from.

`STANDIN_HANG_READY=FILE` in the environment: the predictions runner writes its scores, then
creates FILE and sleeps, so a test can kill the run there (a stage whose scores exist but that
was never put in place).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

from hear_matpac.evaluate import stages, tools

HANG_ENV = "STANDIN_HANG_READY"


def labelled_clips(task_dir: Path) -> int:
    """The clips labelled in every split of a task folder (its `<split>.json` files)."""
    meta = json.loads((Path(task_dir) / "task_metadata.json").read_text())
    splits = meta.get("splits") or ["train", "valid", "test"]
    return sum(len(json.loads((Path(task_dir) / f"{s}.json").read_text())) for s in splits)


def task_score(task_dir: Path, options: Mapping[str, object]) -> float:
    """The stand-in's score: labelled clips / 1000, plus 0.0001 x the `layer` option."""
    return labelled_clips(task_dir) / 1000 + 0.0001 * float(options.get("layer", 0) or 0)


def _value(args: List[str], flag: str) -> Optional[str]:
    return args[args.index(flag) + 1] if flag in args else None


def _embed(args: List[str]) -> None:
    tasks_dir, embeddings = Path(_value(args, "--tasks-dir")), Path(_value(args, "--embeddings-dir"))
    options = json.loads(_value(args, "--model-options") or "{}")
    module = args[0]
    for task in sorted(p for p in tasks_dir.iterdir() if p.is_dir()):
        folder = embeddings / module / task.name
        folder.mkdir(parents=True)
        shutil.copy(task / "task_metadata.json", folder / "task_metadata.json")
        (folder / "profile.embeddings.json").write_text(json.dumps({"time_elapsed": 0.01}))
        (folder / "standin-score.json").write_text(json.dumps({"score": task_score(task, options)}))


def _predict(args: List[str]) -> None:
    dirs, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("--"):
            skip = True
        else:
            dirs.append(Path(arg))
    for folder in dirs:
        value = json.loads((folder / "standin-score.json").read_text())["score"]
        metrics = json.loads((folder / "task_metadata.json").read_text())["evaluation"]
        scores = {"test": {"test_score": value, **{f"test_{m}": value for m in metrics}}}
        (folder / "test.predicted-scores.json").write_text(json.dumps(scores))
    ready = os.environ.get(HANG_ENV)
    if ready:
        Path(ready).write_text(str(os.getpid()))
        time.sleep(600)


def run_tool(name: str, tool_args: Sequence[str], log: Path, env: Optional[Mapping[str, str]] = None,
             python: str = "") -> tools.Stage:
    """`tools.Tools.run`'s stand-in: the tool's files, written here and now."""
    args = list(tool_args)
    tool = args.pop(0)
    log.write_text(f"+ stand-in {tool} {' '.join(args)}\n")
    if tool == "embed":
        _embed(args[4:])  # after --tensorflow MODE --declared FILE
    elif tool == "predict":
        _predict(args)
    return tools.Stage(name, 0.01, log, 100.0)


def tool_method(self: tools.Tools, name: str, tool_args: Sequence[str], log: Path, env: Optional[Mapping[str, str]] = None,
                python: str = "") -> tools.Stage:
    """`run_tool` in the place of the method `tools.Tools.run`."""
    return run_tool(name, tool_args, log, env, python)


def check_task_embeddings(task_embeddings: Path, declared: Path) -> None:
    """`stages.check_task_embeddings`'s stand-in: the stand-in embedding runner writes no
    embeddings to check (the check has its own tests: test_foreign_models.py)."""


def install() -> None:
    """Put the stand-ins in place of `tools.Tools.run` and the embedding check in this process."""
    tools.Tools.run = tool_method
    stages.check_task_embeddings = check_task_embeddings
