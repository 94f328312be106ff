"""`evaluate()`: validate each model once, then run every (model, task) stage that is not
complete yet, through an engine (`engines.local`: this node's slots; `engines.slurm`: a Slurm
job per stage); the synthetic suite where no task folder is given.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

from ..files.folders import ensure_folder
from ..files.shard import longest_first
from ..hear_tools.tasks import suite_matches, write_suite
from ..io import InputError
from ..marks import describe_mark, ensure_marked, is_marked, made_for
from ..reports.results import TaskScore
from ..reports.summary import run_summary, write_run_report
from ..reports.tables import plural
from .engines import ENGINES, Engine, StageSettings
from .engines.local import LocalEngine, default_devices, make_slots, on_slot, run_on_slots
from .specs import ModelSpec, plan_stages
from .stages import RUNS_PURPOSE, TOOL, Outcome, check_grid, print_now, validate
from .task_folders import find_tasks, task_audio_seconds
from .tools import Tools

if TYPE_CHECKING:
    from .engines.slurm import SlurmOptions


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

    def problems(self) -> List[str]:
        """One line per stage that failed (naming its log) or was left to another run."""
        failed = [f"{o.model} / {o.task} failed: {o.message} (log {o.log})" for o in self.failed]
        return failed + [f"{o.model} / {o.task} left undone: {o.message}; no score for it in this run "
                         "(run the same command again once that run has finished)" for o in self.claimed]  # fmt: skip


def synthetic_tasks(out: Path, scale: int, names: Sequence[str], overwrite: bool, report: Callable[[str], None]) -> Path:
    """`out/tasks`: the synthetic suite, reused when it is there already as asked; replaced
    (with `overwrite`) only when hear-matpac made it; anything else there is refused."""
    tasks = out / "tasks"
    if os.path.lexists(tasks) and not suite_matches(tasks, scale, names):
        if not overwrite or not all(is_marked(p) for p in tasks.iterdir()) or tasks.is_symlink():
            raise InputError(f"{tasks} exists and is not this run's synthetic suite (scale {scale}); "
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
    (checked by `specs.check_model`), grid, devices, engine and task folders are checked
    before anything is written; a folder is removed only where its mark says `evaluate` made it
    for that place (`marks.remove_marked`), else the run stops naming it.

    Stages go longest task (by audio duration) first. `engine` "local": on `devices` (default:
    every visible GPU, else cpu) with `jobs` slots each, one stage per slot at a time. "slurm":
    each stage is a Slurm job asking for one GPU (`engines/slurm.py`, options `slurm`); validation
    stays on this node's slots. Outcomes and scores are in plan order (model-major) whatever
    the order the stages ran in. `scores`: those of this run's stages that ran or were
    complete already, read from each stage's folder when it was found complete."""
    check_grid(grid, grid_points)
    slots = make_slots(default_devices() if devices is None else devices, jobs)
    if engine not in ENGINES:
        raise InputError(f"engine must be {' or '.join(ENGINES)}, got {engine!r}")
    if engine == "slurm":
        from .engines.slurm import SlurmOptions, check_engine  # submitit is imported only when asked for

        slurm = slurm or SlurmOptions()
        check_engine(slurm)
    if not models:
        raise InputError("no model to evaluate")
    folders = [m.folder for m in models]
    if len(set(folders)) != len(folders):
        raise InputError("the same model is given twice (same module, weights bytes, environment and options "
                         "that change results)")  # fmt: skip
    task_dirs = find_tasks(Path(tasks_dir), tasks) if tasks_dir is not None else None
    out = ensure_folder(out_dir)
    if task_dirs is None:
        task_dirs = find_tasks(synthetic_tasks(out, scale, tasks, overwrite, report))
    runs = out / "runs"
    if os.path.lexists(runs) and not made_for(Path(os.path.realpath(runs)), TOOL, RUNS_PURPOSE, legacy=True):
        raise InputError(f"{runs} exists and {describe_mark(Path(os.path.realpath(runs)))}, not by evaluate as its "
                         "runs folder; it is left alone: choose another --out")  # fmt: skip
    ensure_marked(runs, TOOL, RUNS_PURPOSE)
    for model in models:
        (runs / model.folder).mkdir(exist_ok=True)
    tools = Tools()
    outcomes = run_on_slots(models, slots, lambda m, slot: on_slot(slot, lambda: validate(
        m, runs / m.folder, tensorflow, overwrite, report, slot.env, tools)), tools.stop)  # fmt: skip
    ok = {m.key for m, o in zip(models, outcomes) if o.status != "failed"}
    plans = plan_stages(models, task_dirs)
    seconds = {d: task_audio_seconds(Path(d)) for d in {p.task_dir for p in plans}}
    order = longest_first([p for p in plans if p.model_key in ok], lambda p: seconds[p.task_dir])
    settings = StageSettings(runs, grid, grid_points, tensorflow, keep_logs, overwrite)
    runner: Engine
    if engine == "slurm":
        from .engines.slurm import SlurmEngine

        runner = SlurmEngine(slurm, Path(slurm.folder) if slurm.folder else out / "slurm")
    else:
        runner = LocalEngine(slots, tools)
    ran = dict(zip(order, runner.run(order, settings, report)))
    stages = [ran[p] if p in ran else Outcome.of(p, "not run", message="its model failed hear-validator")
              for p in plans]  # fmt: skip
    scores = [s for o in stages if o.status in ("ran", "skipped") for s in o.scores]  # this run's stages only
    return RunResult(list(models), outcomes + stages, scores, Path(task_dirs[0]).parent)


def write_reports(result: RunResult, out: Path, chart: bool = True) -> str:
    """`summary.json` and the comparison of `result`'s complete stages in `out`
    (`reports.summary`); the markdown table."""
    return write_run_report(out, [m.record() for m in result.models], [o.record() for o in result.outcomes],
                            result.scores, chart)  # fmt: skip


def report(result: RunResult, out: Path, grid: str, grid_points: int, chart: bool = True) -> str:
    """Write `result`'s reports in `out` (`write_reports`) and return what a run says of them:
    the stage counts, the score table when any stage is complete, and the files written."""
    markdown = write_reports(result, out, chart)
    text = "\n" + stage_counts(result) + "\n"
    if result.scores:
        text += f"\ntest scores (heareval, grid {grid}, {plural(grid_points, 'grid point')})\n{markdown}"
    return text + f"\nwrote {out / 'summary.json'}, {out / 'comparison.md'}"


def summary(result: RunResult) -> Dict[str, object]:
    """`summary.json`'s content for `result`."""
    return run_summary([m.record() for m in result.models], [o.record() for o in result.outcomes], result.scores)


STATUSES = ("ran", "skipped", "claimed", "failed", "not run")


def stage_counts(result: RunResult) -> str:
    """The outcomes in one line, the validations counted apart from the (model, task) stages:
    "stages: 4 ran, 1 failed; hear-validator: 1 ran, 1 skipped"."""

    def counted(outcomes: List[Outcome]) -> str:
        return ", ".join(f"{n} {s}" for s in STATUSES if (n := sum(o.status == s for o in outcomes))) or "none"

    checks = [o for o in result.outcomes if o.plan is None]
    return f"stages: {counted([o for o in result.outcomes if o.plan is not None])}; hear-validator: {counted(checks)}"
