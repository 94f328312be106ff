"""Tasks x models table of primary scores, best per task marked; as markdown and CSV."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from .results import LOWER_IS_BETTER, TaskScore
from .tables import csv_table, markdown_table
from ..io import InputError

MISSING_MD = "–"


@dataclass(frozen=True)
class Comparison:
    """`models`: column labels in order of first appearance; `tasks`: sorted row labels;
    `metrics[task]`: its primary metric; `cells[(task, model)]`: the score, where there is one;
    `best[task]`: the model(s) with the best finite score (ties all marked; none where the
    task's scores are of different metrics, `metrics[task]` then naming them joined by `/`)."""

    models: tuple[str, ...]
    tasks: tuple[str, ...]
    metrics: Mapping[str, str]
    cells: Mapping[tuple[str, str], TaskScore]
    best: Mapping[str, frozenset[str]]

    def higher_is_better(self, task: str) -> bool:
        return self.metrics[task] not in LOWER_IS_BETTER


def build_comparison(scores: Iterable[TaskScore]) -> Comparison:
    """Arrange `scores` (at most one per model and task) and find each task's best."""
    cells: dict[tuple[str, str], TaskScore] = {}
    models: dict[str, None] = {}
    for score in scores:
        key = (score.task, score.model)
        if key in cells:
            raise InputError(
                f"two results for model {score.model} on task {score.task}: "
                f"{cells[key].source} and {score.source}; pass only one of them"
            )
        cells[key] = score
        models.setdefault(score.model, None)
    tasks = tuple(sorted({task for task, _ in cells}))
    metrics = {task: "/".join(sorted({s.metric for (t, _), s in cells.items() if t == task})) for task in tasks}
    best = {}
    for task in tasks:
        finite = {m: s.value for (t, m), s in cells.items() if t == task and math.isfinite(s.value)}
        if finite and "/" not in metrics[task]:  # scores of different metrics are not ranked
            pick = max if metrics[task] not in LOWER_IS_BETTER else min
            top = pick(finite.values())
            best[task] = frozenset(m for m, v in finite.items() if v == top)
        else:
            best[task] = frozenset()
    return Comparison(tuple(models), tasks, metrics, cells, best)


def format_value(value: float, std: Optional[float] = None) -> str:
    """`0.8123`, `0.8123 ± 0.0100`, `NaN`, `inf`, `-inf`."""
    text = _fixed(value)
    return text if std is None else f"{text} ± {_fixed(std)}"


def to_markdown(comparison: Comparison) -> str:
    """A GitHub markdown table, best per task in bold, and a legend."""
    header = ["task", "metric", *comparison.models]
    rows = []
    for task in comparison.tasks:
        metric = comparison.metrics[task] + ("" if comparison.higher_is_better(task) else " (lower is better)")
        row = [task, metric]
        for model in comparison.models:
            score = comparison.cells.get((task, model))
            if score is None:
                row.append(MISSING_MD)
                continue
            text = format_value(score.value, score.std)
            row.append(f"**{text}**" if model in comparison.best[task] else text)
        rows.append(row)
    legend = (
        f"Primary test score per task (the first metric of the task's evaluation list); k-fold tasks: "
        f"mean ± std over folds. Bold: best per task (NaN/inf never count). {MISSING_MD}: no result."
    )
    return markdown_table(header, rows, right=range(2, len(header))) + "\n" + legend + "\n"


def to_csv(comparison: Comparison) -> str:
    """One row per task: task, metric, higher_is_better, `<model>` and `<model> std` per model,
    best (models joined by `;`). Missing: empty; NaN/inf as `nan`/`inf`/`-inf`."""
    model_columns = [column for m in comparison.models for column in (m, f"{m} std")]
    rows = []
    for task in comparison.tasks:
        row = [task, comparison.metrics[task], str(comparison.higher_is_better(task)).lower()]
        for model in comparison.models:
            score = comparison.cells.get((task, model))
            row += ["", ""] if score is None else [_exact(score.value), "" if score.std is None else _exact(score.std)]
        row.append(";".join(m for m in comparison.models if m in comparison.best[task]))
        rows.append(row)
    return csv_table(["task", "metric", "higher_is_better", *model_columns, "best"], rows)


def _fixed(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4f}"


def _exact(value: float) -> str:
    return repr(float(value))  # shortest round-trip text; nan, inf, -inf as Python writes them
