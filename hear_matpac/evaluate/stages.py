"""The main job: hear-validator and both heareval runners, per (model, task) stage.

Each HEAR tool runs in its own process (`python -m hear_matpac.hear_tools ...`), so the TensorFlow
stand-in and `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD` stay inside the tool that needs them; its
output goes to `<out>/<stage>.log`, and its wall time is measured around the process. The
stages run on the slots of `slots` (`--devices`, `--jobs`), longest task first; each stage's
tools get its slot's environment (which GPU, how many threads).
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Sequence

from ..io import write_json
from ..files.folders import ensure_folder
from ..reports.results import TaskScore, read_scores
from .claims import (claim_token, describe_mark, holds_claim, is_marked, made_for, make_marked, owner, release_claim,
                     remove_marked, take_claim, write_mark)
from .embedding_check import DECLARED_FILE, BadEmbeddings, check_task_embeddings
from .environments import launcher_command, launcher_env
from .launch import PLUGIN_MODULE
from .models import ModelSpec, StagePlan, plan_stages
from .slots import Slot, default_devices, longest_first, make_slots, run_on_slots
from .taskdirs import audio_seconds, find_tasks

if TYPE_CHECKING:
    from .slurm import SlurmOptions
from .tasks import suite_matches, write_suite

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


try:  # looked up here, not in the child: after fork only the forking thread exists
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the parent's finally still stops the child
    _PRCTL = None


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent thread dies (even by SIGKILL), so no
    HEAR tool goes on writing into --out as an orphan; the tool cleans up on SIGTERM."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# The HEAR tools running now (by pid), so that an interrupted run stops them all from the main
# thread (`stop_tools`) while the threads that started them wait for them.
_CHILDREN: Dict[int, subprocess.Popen] = {}
_CHILDREN_LOCK = threading.Lock()
_STOPPING = threading.Event()
STOP_GRACE_SECONDS = 30.0


def stop_tools() -> None:
    """Stop every HEAR tool this process runs: SIGTERM (each cleans up), SIGKILL after
    `STOP_GRACE_SECONDS`; no tool starts after this until `allow_tools()`."""
    with _CHILDREN_LOCK:
        _STOPPING.set()
        running = list(_CHILDREN.values())
        for process in running:
            process.terminate()

    def kill_left() -> None:
        with _CHILDREN_LOCK:
            for process in running:
                if process.pid in _CHILDREN:
                    process.kill()

    timer = threading.Timer(STOP_GRACE_SECONDS, kill_left)
    timer.daemon = True
    timer.start()


def allow_tools() -> None:
    """Undo `stop_tools()`: a new run in this process may start tools again."""
    _STOPPING.clear()


def run_tool(name: str, tool_args: Sequence[str], log: Path, env: Optional[Mapping[str, str]] = None,
             python: str = "") -> Stage:
    """`python -m hear_matpac.hear_tools TOOL_ARGS` (`hear_tools/__main__.py`) with output to `log`; `StageFailed` if it fails.
    `env`: variables set for the tool on top of this process's (its slot's GPU and threads).
    `python`: another environment's interpreter, which runs `PYTHON foreign_launcher.py TOOL_ARGS`
    instead (validate and embed only; see `environments`).
    The tool runs in that one process, so its max RSS (from `wait4`) is the stage's peak memory.
    The child stays in this process group and gets SIGTERM when this process (or the thread that
    started it) dies; `stop_tools()` stops it from another thread; if this thread is
    interrupted (SIGTERM, Ctrl-C), the child is stopped before the error goes on."""
    command = [*launcher_command(python), *tool_args] if python else [sys.executable, "-m", "hear_matpac.hear_tools", *tool_args]
    child_env = launcher_env(env) if python else ({**os.environ, **env} if env else None)
    start = time.perf_counter()
    with open(log, "w") as out:
        out.write("+ " + " ".join(f"{k}={v}" for k, v in (env or {}).items()) + (" " if env else "") + " ".join(command) + "\n")
        out.flush()
        with _CHILDREN_LOCK:  # one fork at a time, none once the run is stopping
            if _STOPPING.is_set():
                raise StageFailed(f"{name} not started: the run is stopping; log {log}")
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
                                       env=child_env)  # fmt: skip
            _CHILDREN[process.pid] = process
        try:
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped yet:
            with _CHILDREN_LOCK:  # so `stop_tools` never signals a reaped (reusable) pid
                _CHILDREN.pop(process.pid, None)
            _, wait_status, usage = os.wait4(process.pid, 0)
        except BaseException:
            with _CHILDREN_LOCK:
                _CHILDREN.pop(process.pid, None)
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


def embed_stage(
    weights: Optional[Path], tasks_dir: Path, embeddings_dir: Path, model_options: str, tensorflow: str, log: Path,
    module: str = PLUGIN_MODULE, env: Optional[Mapping[str, str]] = None, python: str = "",
) -> tuple[Stage, List[Path]]:
    """heareval's embedding runner on every task in `tasks_dir`; returns the stage and the
    task embedding folders it wrote (`embeddings_dir/<model[-options]>/<task>`). `weights`: None
    for a plugin that takes none (`load_model()`). `env`, `python`: see `run_tool`."""
    model = ["--model", str(weights)] if weights is not None else []
    args = [module, *model, "--tasks-dir", str(tasks_dir),
            "--embeddings-dir", str(embeddings_dir), "--model-options", model_options]  # fmt: skip
    declared = ["--declared", str(Path(embeddings_dir) / DECLARED_FILE)]  # for `check_task_embeddings`
    stage = run_tool("embed", ["embed", "--tensorflow", tensorflow, *declared, *args], log, env, python)
    return stage, sorted(p for p in Path(embeddings_dir).glob("*/*") if p.is_dir())


def predict_stage(
    task_dirs: Sequence[Path], grid: str, grid_points: int, log: Path, logs_dir: Optional[Path] = None,
    env: Optional[Mapping[str, str]] = None,
) -> Stage:
    """heareval's predictions runner on `task_dirs`; its logs/ go to `logs_dir` (kept) or a
    temporary folder. `env`: see `run_tool`."""
    logs = ["--logs-dir", str(logs_dir)] if logs_dir else []
    args = ["--grid", grid, "--grid-points", str(grid_points), *map(str, task_dirs)]
    return run_tool("predict", ["predict", *logs, *args], log, env)


STAGE_FILE = "stage.json"
TOOL = "evaluate"  # the tool named in the ownership marks of the folders `evaluate` makes
RUNS_PURPOSE, WORK_PURPOSE, STAGE_PURPOSE = "runs", "stage work", "stage"


@dataclass
class Outcome:
    """What happened to one stage (or one model's validation): `ran`, `skipped` (complete
    already), `claimed` (another live process holds it; `message` names it), `failed` (with
    its log) or `not run` (its model failed validation); where it ran (`device`) and when
    (`started`, `finished`: Unix time). `scores`: a complete stage's test scores, read from
    its folder when this run found it complete (ran or skipped), else empty."""

    stage: Dict[str, str]
    status: str
    seconds: float = 0.0
    log: Optional[str] = None
    message: str = ""
    device: str = ""
    started: Optional[float] = None
    finished: Optional[float] = None
    scores: List[TaskScore] = field(default_factory=list)


@dataclass
class RunResult:
    models: List[ModelSpec]
    outcomes: List[Outcome]
    scores: List[TaskScore]
    tasks_dir: Path

    @property
    def failed(self) -> List[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def claimed(self) -> List[Outcome]:
        """Stages left undone because another run holds (or took over) their claim."""
        return [o for o in self.outcomes if o.status == "claimed"]


def stage_done(final: Path, plan: StagePlan, grid: str) -> bool:
    """A stage is complete when its folder holds `stage.json` (written last, just before the
    folder is renamed into place) naming `plan`'s model key, task folder (resolved path) and
    task fingerprint, and `grid`, and the test scores. A task folder moved, replaced or edited
    since (another fingerprint) makes the stage incomplete: it runs again."""
    try:
        record = json.loads((final / STAGE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(record, dict) and record.get("model_key") == plan.model_key and record.get("grid") == grid
            and record.get("task_dir") == plan.task_dir and record.get("task_fingerprint") == plan.task_fingerprint
            and (final / "test.predicted-scores.json").is_file())  # fmt: skip


def complete_scores(final: Path, plan: StagePlan, grid: str) -> Optional[List[TaskScore]]:
    """The test scores of the stage in `final` when it is complete for `plan` and `grid`
    (`stage_done`) and they can be read; else None."""
    if not stage_done(final, plan, grid):
        return None
    try:
        return read_scores(final)
    except (OSError, ValueError, TypeError):
        return None


def _holder(claim: Path) -> str:
    """Who holds `claim`, in words: host, pid and scheduler job where it names one."""
    who = owner(claim)
    if not who:
        return "another run"
    job = f" (job {who['job']})" if who.get("job") else ""
    return f"{who.get('host')} pid {who.get('pid')}{job}"


def synthetic_tasks(out: Path, scale: int, names: Sequence[str], overwrite: bool, report: Callable[[str], None]) -> Path:
    """`out/tasks`: the synthetic suite, reused when it is there already as asked; replaced
    (with `overwrite`) only when hear-matpac made it; anything else there is refused."""
    tasks = out / "tasks"
    if os.path.lexists(tasks) and not suite_matches(tasks, scale, names):
        if not overwrite or not all(is_marked(p) for p in tasks.iterdir()) or tasks.is_symlink():
            raise ValueError(f"{tasks} exists and is not this run's synthetic suite (scale {scale}); "
                             "it is left alone: choose another --out, or --overwrite if hear-matpac made it")  # fmt: skip
        report(f"replacing {tasks} (another scale or task selection)")
    if os.path.lexists(tasks) and suite_matches(tasks, scale, names):
        report(f"reusing the synthetic tasks in {tasks}")
        return tasks
    try:
        write_suite(tasks, scale=scale, tasks=names, overwrite=os.path.lexists(tasks))
    except FileExistsError:  # another run wrote it first
        if not suite_matches(tasks, scale, names):
            raise
    return tasks


_REPORT_LOCK = threading.Lock()


def _log(report: Callable[[str], None], text: str) -> None:
    """A progress line with the time of day: one line per event, so it reads in a log file
    (one at a time: stages on several slots report from their threads)."""
    with _REPORT_LOCK:
        report(time.strftime("%H:%M:%S ") + text)


def print_now(text: str) -> None:
    """`print`, flushed: progress reaches a redirected log (nohup, Slurm) when it happens."""
    print(text, flush=True)


def _validate(model: ModelSpec, folder: Path, tensorflow: str, overwrite: bool, report,
              env: Optional[Mapping[str, str]] = None) -> Outcome:  # fmt: skip
    """hear-validator once per model; remembered in `validated.json` (with the model key)."""
    record = folder / "validated.json"
    info = {"model": model.folder, "stage": "validate", "spec": model.spec}
    try:
        done = json.loads(record.read_text()).get("model_key") == model.key
    except (OSError, ValueError, AttributeError):
        done = False
    if done and not overwrite:
        _log(report, f"{model.folder}: hear-validator passed before; skipped")
        return Outcome(info, "skipped")
    log = folder / f"validate.{os.getpid()}.log"
    args = ["validate", model.weights or "", "--module", model.module, "--tensorflow", tensorflow]
    try:
        stage = run_tool("validate", args, log, env, model.python)
    except StageFailed as err:
        _log(report, f"{model.folder}: hear-validator FAILED; its stages are skipped (log {log})")
        return Outcome(info, "failed", log=str(log), message=str(err).splitlines()[0])
    os.replace(log, folder / "validate.log")
    write_json(record, {"model_key": model.key, "spec": model.spec})
    _log(report, f"{model.folder}: hear-validator passed ({stage.seconds:.1f} s)")
    return Outcome(info, "ran", stage.seconds, str(folder / "validate.log"))


def _work_folders(folder: Path, task: str) -> List[Path]:
    """`task`'s work folders in `folder`: `.work-<task>.<token>` (and `.work-<task>` of older runs)."""
    pattern = re.compile(re.escape(f".work-{task}") + r"(\.[0-9a-f]{12})?")
    return sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name)) if folder.is_dir() else []


def run_stage(plan: StagePlan, runs: Path, grid: str, grid_points: int, tensorflow: str, keep_logs: bool,
              overwrite: bool, report: Callable[[str], None], label: str,
              env: Optional[Mapping[str, str]] = None) -> Outcome:  # fmt: skip
    """One (model, task) stage under its claim: embed into a marked work folder of its own
    (`.work-<task>.<claim token>`), predict, write `stage.json`, and, if it still holds the
    claim, rename the task folder into `runs/<model>/<task>`: that rename is the one step that
    makes a stage complete. Runs the same wherever it is called (this process, a pool thread, a
    Slurm job: `slurm.stage_job`). `env`: its tools' extra environment (see `run_tool`)."""
    folder = runs / plan.model_folder
    final = folder / plan.task
    info = plan.as_dict()
    key = f"{grid}:{grid_points}"
    done = None if overwrite else complete_scores(final, plan, key)
    if done is not None:
        _log(report, f"{label} {plan.model_folder} / {plan.task}: complete; skipped")
        return Outcome(info, "skipped", log=str(final / "embed.log"), scores=done)
    claim = folder / f"{plan.task}.claim"
    if not take_claim(claim):
        who = _holder(claim)
        _log(report, f"{label} {plan.model_folder} / {plan.task}: claimed by {who}; left to it")
        return Outcome(info, "claimed", message=f"claimed by {who}")
    try:
        done = None if overwrite else complete_scores(final, plan, key)  # finished by the claim's last owner
        if done is not None:
            _log(report, f"{label} {plan.model_folder} / {plan.task}: complete; skipped")
            return Outcome(info, "skipped", log=str(final / "embed.log"), scores=done)
        for earlier in _work_folders(folder, plan.task):  # left by earlier holders of the claim
            if not remove_marked(earlier, TOOL, WORK_PURPOSE, legacy=True):
                raise ValueError(f"{earlier} is in the way and {describe_mark(earlier)}, not by evaluate "
                                 "as a stage's work folder; move it")  # fmt: skip
        if os.path.lexists(final) and not made_for(final, TOOL, STAGE_PURPOSE, legacy=True):  # before any work
            raise ValueError(f"{final} is in the way and {describe_mark(final)}, not by evaluate as a "
                             "stage's result; move it")  # fmt: skip
        work = make_marked(folder / f".work-{plan.task}.{claim_token(claim)[:12]}", TOOL, WORK_PURPOSE)
        if os.path.lexists(final):
            _log(report, f"{label} {plan.model_folder} / {plan.task}: replacing the earlier result in {final}")
        (work / "tasks").mkdir()
        (work / "tasks" / plan.task).symlink_to(plan.task_dir, target_is_directory=True)
        start = time.perf_counter()
        _log(report, f"{label} {plan.model_folder} / {plan.task}: embedding")
        try:
            _, embedded = embed_stage(Path(plan.weights) if plan.weights else None, work / "tasks",
                                      work / "embeddings", plan.options_json, tensorflow, work / "embed.log",
                                      plan.module, env, python=plan.python)  # fmt: skip
            if len(embedded) != 1:
                raise StageFailed(f"the embeddings runner wrote {len(embedded)} task folders, not 1; log {work / 'embed.log'}")
            check_task_embeddings(embedded[0], work / "embeddings" / DECLARED_FILE)
            logs_dir = work / "predict-logs"
            predict_stage(embedded, grid, grid_points, work / "predict.log", logs_dir, env)
        except (StageFailed, BadEmbeddings) as err:
            seconds = time.perf_counter() - start
            log = next((str(p) for p in (work / "predict.log", work / "embed.log") if p.is_file()), str(work))
            _log(report, f"{label} {plan.model_folder} / {plan.task}: FAILED after {seconds:.1f} s (log {log})")
            return Outcome(info, "failed", seconds, log, str(err).splitlines()[0])
        result = embedded[0]
        for name in ("embed.log", "predict.log"):
            os.replace(work / name, result / name)
        if keep_logs:  # without the links to the task folder (`launch.link_task_dirs`)
            shutil.rmtree(logs_dir / "embeddings", ignore_errors=True)
            os.replace(logs_dir, result / "heareval-logs")
        write_mark(result, TOOL, STAGE_PURPOSE)
        seconds = time.perf_counter() - start
        write_json(result / STAGE_FILE, {**info, "grid": key, "seconds": seconds})
        if not holds_claim(claim):  # its lease ran out and another process took the stage over
            remove_marked(work, TOOL, WORK_PURPOSE)
            who = _holder(claim)
            _log(report, f"{label} {plan.model_folder} / {plan.task}: its claim was taken over by {who} while it "
                         "ran; result discarded, left to the new holder")  # fmt: skip
            return Outcome(info, "claimed", seconds, message=f"claim taken over by {who} while it ran; result discarded")
        if os.path.lexists(final):
            if not remove_marked(final, TOOL, STAGE_PURPOSE, legacy=True):
                raise ValueError(f"{final} is in the way and {describe_mark(final)}, not by evaluate as a "
                                 "stage's result; move it")  # fmt: skip
        os.rename(result, final)
        remove_marked(work, TOOL, WORK_PURPOSE)
        try:
            scores = read_scores(final)  # still under its claim: nobody else writes there
        except (OSError, ValueError, TypeError) as err:
            _log(report, f"{label} {plan.model_folder} / {plan.task}: FAILED: its scores cannot be read ({err})")
            return Outcome(info, "failed", seconds, str(final / "predict.log"), f"its scores cannot be read: {err}")
        _log(report, f"{label} {plan.model_folder} / {plan.task}: done in {seconds:.1f} s")
        return Outcome(info, "ran", seconds, str(final / "predict.log"), scores=scores)
    finally:
        release_claim(claim)


def _on_slot(slot: Slot, step: Callable[[], Outcome]) -> Outcome:
    """`step()`'s outcome, with the slot's device and the wall-clock start and end."""
    started = time.time()
    outcome = step()
    outcome.device, outcome.started, outcome.finished = slot.device, started, time.time()
    return outcome


def run_stages(plans: Sequence[StagePlan], slots: Sequence[Slot], runs: Path, grid: str, grid_points: int,
               tensorflow: str, keep_logs: bool, overwrite: bool, report: Callable[[str], None]) -> List[Outcome]:  # fmt: skip
    """Every stage of `plans` (already in the order to start them, labelled `[n/N]` in that
    order) on the slots of this node, each on the next free slot; their outcomes in the same
    order. A failed stage is an outcome (with its log); the others go on."""

    def one(numbered: tuple[int, StagePlan], slot: Slot) -> Outcome:
        n, plan = numbered
        return _on_slot(slot, lambda: run_stage(plan, runs, grid, grid_points, tensorflow, keep_logs, overwrite,
                                                report, f"[{n}/{len(plans)}]", slot.env))  # fmt: skip

    return run_on_slots(list(enumerate(plans, 1)), slots, one, stop_tools)


def evaluate(
    models: Sequence[ModelSpec],
    out_dir: Path,
    tasks_dir: Optional[Path] = None,
    tasks: Sequence[str] = (),
    grid: str = "faster",
    grid_points: int = 8,
    scale: int = 1,
    tensorflow: str = "auto",
    keep_logs: bool = False,
    overwrite: bool = False,
    report: Callable[[str], None] = print_now,
    devices: Optional[Sequence[str]] = None,
    jobs: int = 1,
    engine: str = "local",
    slurm: Optional["SlurmOptions"] = None,
) -> RunResult:
    """Validate each model once, then run every (model, task) stage that is not complete yet
    into `out_dir/runs/<model>/<task>`; return what happened and the test scores. The models
    (checked by `models.check_model`), grid, devices, engine and task folders are checked
    before anything is written; a folder is removed only where its mark says `evaluate` made it
    for that place (`claims.remove_marked`), else the run stops naming it.

    Stages go longest task (by audio duration) first. `engine` "local": on `devices` (default:
    every visible GPU, else cpu) with `jobs` slots each, one stage per slot at a time. "slurm":
    each stage is a Slurm job asking for one GPU (`slurm.py`, options `slurm`); validation
    stays on this node's slots. Outcomes and scores are in plan order (model-major) whatever
    the order the stages ran in. `scores`: those of this run's stages that ran or were
    complete already, read from each stage's folder when it was found complete."""
    check_grid(grid, grid_points)
    slots = make_slots(default_devices() if devices is None else devices, jobs)
    if engine not in ("local", "slurm"):
        raise ValueError(f"engine must be local or slurm, got {engine!r}")
    if engine == "slurm":
        from .slurm import SlurmOptions, check_engine

        slurm = slurm or SlurmOptions()
        check_engine(slurm)
    if not models:
        raise ValueError("no model to evaluate")
    folders = [m.folder for m in models]
    if len(set(folders)) != len(folders):
        raise ValueError("the same model is given twice (same module, weights bytes and options)")
    task_dirs = find_tasks(Path(tasks_dir), tasks) if tasks_dir is not None else None
    out = ensure_folder(out_dir)
    if task_dirs is None:
        task_dirs = find_tasks(synthetic_tasks(out, scale, tasks, overwrite, report))
    runs = out / "runs"
    if os.path.lexists(runs) and not made_for(Path(os.path.realpath(runs)), TOOL, RUNS_PURPOSE, legacy=True):
        raise ValueError(f"{runs} exists and {describe_mark(Path(os.path.realpath(runs)))}, not by evaluate as its "
                         "runs folder; it is left alone: choose another --out")  # fmt: skip
    if not runs.is_dir():
        try:
            make_marked(runs, TOOL, RUNS_PURPOSE)
        except FileExistsError:
            pass
    for model in models:
        (runs / model.folder).mkdir(exist_ok=True)
    allow_tools()
    outcomes = run_on_slots(models, slots, lambda m, slot: _on_slot(slot, lambda: _validate(
        m, runs / m.folder, tensorflow, overwrite, report, slot.env)), stop_tools)  # fmt: skip
    ok = {m.key for m, o in zip(models, outcomes) if o.status != "failed"}
    plans = plan_stages(models, task_dirs)
    seconds = {d: audio_seconds(Path(d)) for d in {p.task_dir for p in plans}}
    order = longest_first([p for p in plans if p.model_key in ok], lambda p: seconds[p.task_dir])
    if engine == "slurm":
        from .slurm import run_stages_submitit

        labels = [f"[{n}/{len(order)}]" for n in range(1, len(order) + 1)]
        stage_kwargs = dict(runs=runs.resolve(), grid=grid, grid_points=grid_points, tensorflow=tensorflow,
                            keep_logs=keep_logs, overwrite=overwrite)  # fmt: skip
        folder = Path(slurm.folder) if slurm.folder else out / "slurm"
        ran = dict(zip(order, run_stages_submitit(order, stage_kwargs, slurm, folder.resolve(), report, labels)))
    else:
        ran = dict(zip(order, run_stages(order, slots, runs, grid, grid_points, tensorflow, keep_logs, overwrite,
                                         report)))  # fmt: skip
    stages = [ran[p] if p in ran else Outcome(p.as_dict(), "not run", message="its model failed hear-validator")
              for p in plans]  # fmt: skip
    scores = [s for o in stages if o.status in ("ran", "skipped") for s in o.scores]  # this run's stages only
    return RunResult(list(models), outcomes + stages, scores, Path(task_dirs[0]).parent)


def json_number(value: Optional[float]) -> object:
    """A score for strict JSON: finite numbers as they are, NaN and infinities as the strings
    "nan", "inf", "-inf" (JSON has no such numbers), None as null."""
    if value is None or math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def summary(result: RunResult) -> Dict[str, object]:
    """`summary.json`'s content: the models, every stage's outcome, the scores (strict JSON)."""
    return {
        "non_finite": 'scores that are NaN or infinite are the strings "nan", "inf", "-inf"',
        "models": [{"spec": m.spec, "folder": m.folder, "module": m.module, "weights": m.weights,
                    "weights_sha256": m.weights_sha256, "options": m.options, "key": m.key, "python": m.python,
                    "packages": m.packages} for m in result.models],
        "stages": [{**o.stage, "status": o.status, "seconds": o.seconds, "log": o.log, "message": o.message,
                    "device": o.device, "started": o.started, "finished": o.finished} for o in result.outcomes],
        "scores": [{"model": s.model, "task": s.task, "metric": s.metric, "value": json_number(s.value),
                    "std": json_number(s.std), "folds": s.folds} for s in result.scores],
    }  # fmt: skip
