"""Sweep model options through heareval: for each setting (e.g. each `window_seconds`), run the
embedding runner and the predictions runner on the same tasks, and measure the encoding cost.

Cost of a setting: the embedding stage's wall time (its own process: start-up, model load and
every task), heareval's own encoding time (`time_elapsed` in each task's
`profile.embeddings.json`, summed: reading audio and embedding, no start-up), audio-seconds per
second of that encoding time, and the stage process's peak resident memory (`ru_maxrss`).
Each setting gets its own embeddings folder, so no two settings can share or overwrite files
whatever heareval makes of their options in its folder names.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..io import InputError
from ..files.folders import ensure_folder
from ..options import ModelOptions
from ..reports.comparison import format_value
from ..reports.results import LOWER_IS_BETTER, TaskScore, json_number, read_scores, score_json
from ..reports.tables import csv_table, markdown_table, save_png, write_text
from ..weights.read import read_config
from ..marks import make_marked, refuse_unless_made_for, remove_marked
from .run import synthetic_tasks
from .stages import check_grid
from .task_folders import find_tasks, task_audio_seconds
from .tools import Stage, Tools

Setting = Tuple[str, Dict[str, object]]  # (label, model options)
TOOL, PURPOSE = "sweep", "results"  # the ownership mark of OUT/sweep/
FOLDER = "sweep"  # sweep's own folder in --out: nothing of evaluate's (tasks/, runs/) is ever touched


@dataclass(frozen=True)
class SweepRow:
    """One setting's results: its embedding stage, heareval's encoding time, the audio it
    embedded, and the test scores of every task (in each task's `evaluation` order)."""

    label: str
    options: Dict[str, object]
    embed: Stage
    encode_seconds: float
    audio_seconds: float
    scores: Tuple[TaskScore, ...]

    @property
    def audio_per_second(self) -> float:
        """Audio-seconds embedded per second of heareval's encoding time."""
        return self.audio_seconds / self.encode_seconds if self.encode_seconds > 0 else math.nan


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
            ModelOptions.parse({"window_seconds": value}, config)
        except ValueError as err:
            raise InputError(f"--window-seconds: {err}") from None
    return values


def options_label(options: Mapping[str, object]) -> str:
    """`{"a": 1, "b": 2}` -> `"a=1, b=2"`; `{}` -> `"defaults"`."""
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"


def _encode_seconds(task_embeddings_dir: Path) -> float:
    profile = json.loads((task_embeddings_dir / "profile.embeddings.json").read_text())
    return float(profile["time_elapsed"])


def _folder_name(index: int, label: str) -> str:
    return f"{index:02d}-" + re.sub(r"[^A-Za-z0-9._=-]+", "_", label)


def run_sweep(
    weights: Path,
    out_dir: Path,
    settings: Sequence[Setting],
    tasks_dir: Optional[Path] = None,
    tasks: Sequence[str] = (),
    scale: int = 1,
    grid: str = "faster",
    grid_points: int = 8,
    tensorflow: str = "auto",
    report: Callable[[str], None] = print,
) -> List[SweepRow]:
    """Embed and predict once per setting; return a row per setting. Everything goes to
    sweep's own folder `out_dir/sweep/`: without `tasks_dir`, the synthetic suite (`tasks`:
    names to keep, default all; `scale`: clips per split multiplied) in `sweep/tasks` (`tasks`
    also picks tasks of `tasks_dir`); each setting's embeddings and logs in
    `sweep/<NN-label>/`. A `sweep/` of an earlier sweep (its mark says so) is replaced; anything
    else there is refused before anything is written. Nothing else in `out_dir` is removed."""
    check_grid(grid, grid_points)
    labels = [label for label, _ in settings]
    if not labels or len(set(labels)) != len(labels):
        raise InputError(f"settings need distinct labels, got {labels}")
    if tasks_dir is not None:
        find_tasks(Path(tasks_dir), tasks)  # checked before anything is written
    runs = Path(out_dir) / FOLDER
    refuse_unless_made_for(runs, TOOL, PURPOSE, "results folder")
    if tasks_dir is not None and Path(os.path.realpath(runs)) in Path(os.path.realpath(tasks_dir)).parents:
        raise InputError(f"--tasks-dir {tasks_dir} lies inside {runs}, which this sweep replaces; "
                         "copy the tasks elsewhere first")  # fmt: skip
    ensure_folder(out_dir)
    remove_marked(runs, TOOL, PURPOSE)  # the previous sweep's results, and nothing else
    make_marked(runs, TOOL, PURPOSE)
    if tasks_dir is None:
        tasks_dir = synthetic_tasks(runs, scale, tasks, False, report)
        tasks = ()
    tasks_dir = Path(tasks_dir)
    if tasks:  # heareval runs every task of its --tasks-dir: give it links to the chosen ones
        chosen = runs / "selected-tasks"
        chosen.mkdir()
        for task in find_tasks(tasks_dir, tasks):
            (chosen / task.name).symlink_to(task.resolve(), target_is_directory=True)
        tasks_dir = chosen
    task_dirs = find_tasks(tasks_dir)
    audio = {p.name: task_audio_seconds(p) for p in task_dirs}
    tools = Tools()
    rows = []
    for index, (label, options) in enumerate(settings):
        run = runs / _folder_name(index, label)
        run.mkdir()
        stage, embedded = tools.embed(weights, Path(tasks_dir), run / "embeddings", json.dumps(options),
                                     tensorflow, run / "embed.log")  # fmt: skip
        encode = sum(_encode_seconds(d) for d in embedded)
        report(f"[{index + 1}/{len(settings)}] {label}: embedded in {stage.seconds:.1f} s "
               f"(encoding {encode:.1f} s, peak {stage.peak_rss_mib:.0f} MiB)")  # fmt: skip
        tools.predict(embedded, grid, grid_points, run / "predict.log")
        scores = tuple(row for d in embedded for row in read_scores(d))
        report(f"[{index + 1}/{len(settings)}] {label}: predicted; "
               + ", ".join(f"{s.task} {s.metric} {s.value:.4f}" for s in scores))  # fmt: skip
        total_audio = sum(audio[d.name] for d in embedded)
        rows.append(SweepRow(label, dict(options), stage, encode, total_audio, scores))
    return rows


def _metric_columns(rows: Sequence[SweepRow], all_metrics: bool) -> List[Tuple[str, str]]:
    """(task, metric) columns: every task's primary metric (its first), or all its metrics."""
    columns: List[Tuple[str, str]] = []
    for row in rows:
        for s in row.scores:
            first = all(c[0] != s.task for c in columns)
            if (all_metrics or first) and (s.task, s.metric) not in columns:
                columns.append((s.task, s.metric))
    return columns


def table(rows: Sequence[SweepRow], setting_header: str = "setting", all_metrics: bool = False,
          for_csv: bool = False) -> Tuple[List[str], List[List[str]]]:  # fmt: skip
    """Header and cells: the setting, its cost, then one score column per (task, metric);
    metrics where lower is better say so in the header. For people, k-fold scores read
    "mean ± std" at 4 decimals; `for_csv` gives numbers only, at full precision, with the std
    over folds in a "... std" column after each score column that has one."""
    columns = _metric_columns(rows, all_metrics)
    found = [{(s.task, s.metric): s for s in row.scores} for row in rows]
    with_std = {key for key in columns if any(f.get(key) is not None and f[key].std is not None for f in found)}
    header = [setting_header, "embed stage s", "encoding s", "audio-s per s", "peak RSS MiB"]
    for task, metric in columns:
        name = f"{task} {metric}" + (" (lower is better)" if metric in LOWER_IS_BETTER else "")
        header += [name, f"{name} std"] if for_csv and (task, metric) in with_std else [name]
    cells = []
    for row, scores in zip(rows, found):
        line = [row.label, f"{row.embed.seconds:.1f}", f"{row.encode_seconds:.2f}",
                f"{row.audio_per_second:.1f}", f"{row.embed.peak_rss_mib:.0f}"]  # fmt: skip
        for key in columns:
            s = scores.get(key)
            if for_csv:
                line.append("" if s is None else repr(s.value))
                if key in with_std:
                    line.append("" if s is None or s.std is None else repr(s.std))
            else:
                line.append("" if s is None else format_value(s.value, s.std))
        cells.append(line)
    return header, cells


def save_plot(rows: Sequence[SweepRow], path: Path, xlabel: str = "setting") -> None:
    """Two panels against the settings: each task's primary score, and the encoding cost
    (audio-seconds per second, peak memory of the embedding stage)."""
    from matplotlib.figure import Figure

    xs = list(range(len(rows)))
    figure = Figure(figsize=(11.0, 4.2), layout="constrained")
    scores_axes, cost_axes = figure.subplots(1, 2)
    for task, metric in _metric_columns(rows, all_metrics=False):
        ys = [next((s.value for s in r.scores if (s.task, s.metric) == (task, metric)), math.nan) for r in rows]
        note = " (lower is better)" if metric in LOWER_IS_BETTER else ""
        scores_axes.plot(xs, ys, marker="o", label=f"{task}: {metric}{note}")
    scores_axes.set_ylabel("primary test score")
    scores_axes.set_title("heareval test score")
    scores_axes.legend(fontsize=7)
    cost_axes.plot(xs, [r.audio_per_second for r in rows], marker="o", color="tab:blue")
    cost_axes.set_ylabel("audio-seconds per second (encoding)", color="tab:blue")
    memory_axes = cost_axes.twinx()
    memory_axes.plot(xs, [r.embed.peak_rss_mib for r in rows], marker="s", color="tab:red")
    memory_axes.set_ylabel("peak RSS of the embedding stage (MiB)", color="tab:red")
    cost_axes.set_title("encoding cost")
    for axes in (scores_axes, cost_axes):
        axes.set_xticks(xs)
        axes.set_xticklabels([r.label for r in rows], fontsize=8)
        axes.set_xlabel(xlabel)
        axes.grid(alpha=0.3)
    save_png(figure, path, dpi=110)


def write_outputs(rows: Sequence[SweepRow], out_dir: Path, stem: str = "sweep", setting_header: str = "setting",
                  all_metrics: bool = False, plot: bool = True) -> List[Path]:  # fmt: skip
    """`<stem>.md`, `<stem>.csv`, `<stem>.json` and (with `plot`) `<stem>.png` in `out_dir`."""
    markdown = markdown_table(*table(rows, setting_header, all_metrics))
    csv_text = csv_table(*table(rows, setting_header, all_metrics, for_csv=True))
    out = Path(out_dir)
    written = [write_text(out / f"{stem}{suffix}", text)
               for suffix, text in ((".md", markdown), (".csv", csv_text),
                                    (".json", json.dumps([_row_json(r) for r in rows], indent=2, allow_nan=False)))]  # fmt: skip
    if plot:
        save_plot(rows, out / f"{stem}.png", setting_header)
        written.append(out / f"{stem}.png")
    return written


def _row_json(row: SweepRow) -> Dict[str, object]:
    return {"label": row.label, "options": row.options, "embed_stage_seconds": row.embed.seconds,
            "encode_seconds": row.encode_seconds, "audio_seconds": row.audio_seconds,
            "audio_per_second": json_number(row.audio_per_second), "peak_rss_mib": row.embed.peak_rss_mib,
            "scores": [score_json(s) for s in row.scores]}  # fmt: skip
