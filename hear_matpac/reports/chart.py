"""PNG bar chart of a `Comparison`: one group of bars per task, one bar per model.

Needs matplotlib (`pip install 'hear-matpac[compare]'`). Drawn through `matplotlib.figure.Figure`,
never pyplot, so it needs no display and leaves the caller's backend alone (rendering is Agg).
"""
from __future__ import annotations

import importlib.util
import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from ..io import InputError
from .comparison import Comparison
from .tables import save_png

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def require_matplotlib() -> None:
    """Fail early, in one line, when matplotlib is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        raise InputError("the PNG chart needs matplotlib: pip install 'hear-matpac[compare]', or pass --no-chart")


MAX_BAR_TASKS = 40  # beyond this, one bar group per task is unreadable: the chart summarises
MAX_WIDTH_IN = 30.0
LABEL_WIDTH = 18  # characters of a task name per line of its x label


def save_chart(comparison: Comparison, path: Path) -> None:
    """Grouped bars of each task's primary score (error bars: std over folds); the best bar of
    each task is starred; NaN, infinite and missing scores get no bar. Over `MAX_BAR_TASKS`
    tasks, a summary instead (`_save_summary_chart`), so the PNG keeps a readable size."""
    if len(comparison.tasks) > MAX_BAR_TASKS:
        _save_summary_chart(comparison, path)
        return
    save_png(bar_chart(comparison), path, dpi=120)


def bar_chart(comparison: Comparison) -> "Figure":
    """The grouped bars of `save_chart` as a matplotlib `Figure`: the x labels (task, metric;
    long names wrapped) slanted so that neighbours never run together, each star above the top
    of its bar's error bar."""
    from matplotlib.figure import Figure

    n_models, n_tasks = len(comparison.models), len(comparison.tasks)
    width = 0.8 / max(n_models, 1)
    figure = Figure(figsize=(max(6.0, 1.2 + n_tasks * (0.5 + 0.35 * n_models)), 4.8), layout="constrained")
    axes = figure.subplots()
    for m, model in enumerate(comparison.models):
        xs, heights, errors, starred = [], [], [], []
        for t, task in enumerate(comparison.tasks):
            score = comparison.cells.get((task, model))
            if score is None or not math.isfinite(score.value):
                continue
            xs.append(t - 0.4 + width * (m + 0.5))
            heights.append(score.value)
            errors.append(score.std if score.std is not None else math.nan)  # NaN: no error bar
            starred.append(model in comparison.best[task])
        bars = axes.bar(xs, heights, width, yerr=errors, capsize=2, label=model)
        for bar, star, error in zip(bars, starred, errors):
            if star:  # above the error bar's top, not on it
                top = bar.get_height() + (abs(error) if math.isfinite(error) else 0.0)
                axes.annotate("★", (bar.get_x() + bar.get_width() / 2, top),
                              ha="center", va="bottom", xytext=(0, 2), textcoords="offset points")  # fmt: skip
    axes.set_xticks(range(n_tasks))
    axes.set_xticklabels(
        ["\n".join(textwrap.wrap(task, LABEL_WIDTH) + [_metric_label(comparison, task)]) for task in comparison.tasks],
        rotation=35, ha="right", rotation_mode="anchor", fontsize=8,
    )  # fmt: skip
    axes.set_ylabel("primary test score")
    axes.set_title("heareval results (★ best per task)" if n_models else "no scores")
    if n_models:  # an empty comparison (no complete stage) is an empty chart, not a stale one
        axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    return figure


def _metric_label(comparison: Comparison, task: str) -> str:
    metric = comparison.metrics[task]
    return metric if comparison.higher_is_better(task) else f"{metric} (lower is better)"


def _save_summary_chart(comparison: Comparison, path: Path) -> None:
    """Many tasks: per model, how many tasks it is best on and the spread of its finite primary
    scores (box plot over tasks); each task's score is in the table."""
    from matplotlib.figure import Figure

    models = comparison.models
    width = min(MAX_WIDTH_IN, max(8.0, 2.0 + 0.9 * len(models)))
    figure = Figure(figsize=(width, 4.8), layout="constrained")
    wins_axes, spread_axes = figure.subplots(1, 2)
    wins = [sum(model in comparison.best[t] for t in comparison.tasks) for model in models]
    wins_axes.bar(range(len(models)), wins)
    wins_axes.set_ylabel("tasks where it is best")
    spread = []
    for model in models:
        values = [c.value for t in comparison.tasks if (c := comparison.cells.get((t, model))) is not None]
        spread.append([v for v in values if math.isfinite(v)] or [math.nan])
    spread_axes.boxplot(spread)
    spread_axes.set_ylabel("primary test score over tasks")
    for axes in (wins_axes, spread_axes):
        axes.set_xticks(range(len(models)) if axes is wins_axes else range(1, len(models) + 1))
        axes.set_xticklabels(models, rotation=30, ha="right", fontsize=7)
        axes.grid(axis="y", alpha=0.3)
    figure.suptitle(f"heareval results over {len(comparison.tasks)} tasks (each task's score: the table)")
    save_png(figure, path, dpi=100)
