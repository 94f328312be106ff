"""`sweep`: `evaluate()` over generated specs, one hear_matpac model per `window_seconds`
setting (same weights, same other options), so a sweep has evaluate's model keys, claims,
task folders, resume, slots and engines; plus the cost of each setting, gathered from its
stages' recorded outcomes (`stages.stage_cost`), and the table and plot (`reports.sweep`).

Everything goes to sweep's own folder `OUT/sweep/` (mark: sweep, results): `runs/` and, without
`--tasks-dir`, the whole synthetic suite in `tasks/` (`--tasks` picks from it), laid out as `evaluate --out OUT/sweep` lays
them out. A second identical sweep finds every stage complete and reruns nothing; a changed
setting list runs only the new settings. Nothing is ever removed but what `evaluate` may remove.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Mapping, Optional, Sequence, Tuple

from ..files.folders import ensure_folder
from ..hear_tools.launch import PLUGIN_MODULE
from ..io import InputError
from ..marks import ensure_marked, refuse_unless_made_for
from ..options import ModelOptions
from ..reports.chart import require_matplotlib
from ..reports.sweep import SweepRow, write_outputs
from ..weights.locate import best_available_weights
from ..weights.read import read_config
from .run import RunResult, evaluate, synthetic_tasks
from .specs import check_model
from .stages import COST_FIELDS, print_now
from .task_folders import find_tasks, task_audio_seconds

if TYPE_CHECKING:
    from .engines.slurm import SlurmOptions

TOOL, PURPOSE = "sweep", "results"  # the ownership mark of OUT/sweep/
FOLDER = "sweep"  # sweep's own folder in --out: nothing of evaluate's (tasks/, runs/) is ever touched
SWEPT = "window_seconds"
Setting = Tuple[str, Mapping[str, object]]  # (label, model options)


def parse_window_seconds(text: str, weights: Path) -> List[float]:
    """`"0.96,1.92"` -> `[0.96, 1.92]`, each checked against the checkpoint as `load_model`
    would (`ValueError` in one line naming the bad value)."""
    values = []
    for item in (part.strip() for part in str(text).split(",")):
        try:
            value = float(item)
        except ValueError:
            raise InputError(
                f"--window-seconds: {item!r} is not a number; give seconds separated by commas, "
                "e.g. 0.96,1.92,3.04,6.08"
            ) from None
        if value in values:
            raise InputError(f"--window-seconds: {item} is given twice; give each length once")
        values.append(value)
    config = read_config(weights)  # shapes only: the weights are read and checked when used
    for value in values:
        try:
            ModelOptions.parse({SWEPT: value}, config)
        except ValueError as err:
            raise InputError(f"--window-seconds: {err}") from None
    return values


def options_label(options: Mapping[str, object]) -> str:
    """`{"a": 1, "b": 2}` -> `"a=1, b=2"`; `{}` -> `"defaults"`."""
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"


def window_settings(windows: Sequence[float], options: Mapping[str, object]) -> List[Setting]:
    """A setting per window length: `options` and that `window_seconds`, labelled by the length
    (`ValueError` where `options` already set it)."""
    if SWEPT in options:
        raise InputError("--model-options: window_seconds is what sweep varies; give the lengths with --window-seconds")
    return [(f"{w:g}", {**options, SWEPT: w}) for w in windows]


def _total(values: Sequence[Optional[float]], how: Callable[[Sequence[float]], float]) -> Optional[float]:
    """`how` of the values, or None when any is unknown (a stage of an older version)."""
    return None if not values or any(v is None for v in values) else how(values)  # type: ignore[arg-type]


def sweep_rows(result: RunResult, labels: Sequence[str]) -> List[SweepRow]:
    """A row per model of `result` (labelled by `labels`): its complete stages' scores and the
    cost recorded for them (for a stage reused from an earlier run, the cost measured when it
    ran), the audio of those stages' tasks."""
    complete = [o for o in result.outcomes if o.plan is not None and o.status in ("ran", "skipped")]
    audio = {d: task_audio_seconds(Path(d)) for d in {o.plan.task_dir for o in complete}}  # once per task
    rows = []
    for model, label in zip(result.models, labels):
        done = [o for o in complete if o.model == model.folder]
        cost = {k: [o.cost.get(k) for o in done] for k in COST_FIELDS}
        rows.append(SweepRow(label, dict(model.options),
                             _total(cost["embed_seconds"], math.fsum), _total(cost["encode_seconds"], math.fsum),
                             math.fsum(audio[o.plan.task_dir] for o in done),
                             _total(cost["peak_rss_mib"], max), tuple(s for o in done for s in o.scores)))  # fmt: skip
    return rows


def sweep_settings(
    weights: Path,
    out_dir: Path,
    settings: Sequence[Setting],
    tasks_dir: Optional[Path] = None,
    tasks: Sequence[str] = (),
    scale: int = 1,
    grid: str = "faster",
    grid_points: int = 8,
    tensorflow: str = "auto",
    report: Callable[[str], None] = print_now,
    devices: Optional[Sequence[str]] = None,
    jobs: int = 1,
    engine: str = "local",
    slurm: Optional["SlurmOptions"] = None,
) -> Tuple[RunResult, List[SweepRow]]:
    """`evaluate()` in `out_dir/sweep/` of one hear_matpac model per setting (label, options),
    all with `weights`; the run and a row per setting. Without `tasks_dir`, the whole synthetic
    suite (`scale`) in `sweep/tasks/`, `tasks` picking from it (or from `tasks_dir`). Everything
    is checked before anything is written: the options, an `out_dir/sweep` that sweep did not
    make, a `tasks_dir` inside it."""
    labels = [label for label, _ in settings]
    if not labels or len(set(labels)) != len(labels):
        raise InputError(f"settings need distinct labels, got {labels}")
    models = [check_model(f"{PLUGIN_MODULE}:{weights}:{json.dumps(dict(options))}") for _, options in settings]
    if tasks_dir is not None:
        find_tasks(Path(tasks_dir), tasks)  # checked before anything is written
    runs = Path(out_dir) / FOLDER
    refuse_unless_made_for(runs, TOOL, PURPOSE, "results folder")
    if tasks_dir is not None and Path(os.path.realpath(runs)) in Path(os.path.realpath(tasks_dir)).parents:
        raise InputError(f"--tasks-dir {tasks_dir} lies inside {runs}, which holds sweep's own results; "
                         "copy the tasks elsewhere first")  # fmt: skip
    ensure_folder(out_dir)
    ensure_marked(runs, TOOL, PURPOSE)
    if tasks_dir is None:  # the whole suite, whatever `tasks` picks: every selection reuses it
        tasks_dir = synthetic_tasks(runs, scale, (), True, report)
    result = evaluate(models, runs, tasks_dir, tasks, grid, grid_points, scale, tensorflow, report=report,
                      devices=devices, jobs=jobs, engine=engine, slurm=slurm)  # fmt: skip
    return result, sweep_rows(result, labels)


@dataclass
class SweepResult:
    """What `run_sweep` did: the checkpoint it used, the run, a row per setting, the files written."""

    weights: Path
    result: RunResult
    rows: List[SweepRow]
    written: List[Path]


def run_sweep(
    weights: str,
    out_dir: Path,
    window_seconds: str,
    options: Mapping[str, object],
    tasks_dir: Optional[Path] = None,
    tasks: Sequence[str] = (),
    scale: int = 1,
    grid: str = "faster",
    grid_points: int = 8,
    tensorflow: str = "auto",
    plot: bool = True,
    report: Callable[[str], None] = print_now,
    devices: Optional[Sequence[str]] = None,
    jobs: int = 1,
    engine: str = "local",
    slurm: Optional["SlurmOptions"] = None,
) -> SweepResult:
    """`sweep_settings` of one setting per length in `window_seconds` (text: "0.96,1.92"; the
    other `options` the same), with the checkpoint `weights` (a path, or '' for the best one
    available: `best_available_weights`); then `sweep.md`, `.csv`, `.json` (and `.png` with
    `plot`) in `out_dir`. Everything is checked before anything is written."""
    path = best_available_weights(weights)
    settings = window_settings(parse_window_seconds(window_seconds, path), options)
    if plot:
        require_matplotlib()
    report(f"weights: {path}")
    result, rows = sweep_settings(path, out_dir, settings, tasks_dir, tasks, scale, grid, grid_points, tensorflow, report,
                                  devices, jobs, engine, slurm)  # fmt: skip
    return SweepResult(path, result, rows, write_outputs(rows, Path(out_dir), setting_header=SWEPT, plot=plot))
