"""What `evaluate` writes at the end of a run, beside `runs/`: `summary.json` (the models, every
stage's outcome, the scores; strict JSON) and the comparison of this run's complete stages
(`comparison.md`, `.csv`, `.png`). Only this run's stages: never other files under `runs/`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

from ..files.folders import ensure_folder
from ..io import write_json
from .chart import save_chart
from .comparison import build_comparison, to_csv, to_markdown
from .results import NON_FINITE, TaskScore, score_json
from .tables import plural, write_text

NO_SCORES = "No stage of this run is complete: no scores.\n"


def run_summary(models: Sequence[Mapping[str, object]], stages: Sequence[Mapping[str, object]],
                scores: Sequence[TaskScore]) -> Dict[str, object]:  # fmt: skip
    """`summary.json`'s content: the models, every stage's outcome, the scores (strict JSON)."""
    return {"non_finite": NON_FINITE, "models": [dict(m) for m in models], "stages": [dict(s) for s in stages],
            "scores": [score_json(s) for s in scores]}  # fmt: skip


def primary_scores(scores: Sequence[TaskScore]) -> List[TaskScore]:
    """The primary score of each (model, task): the first of its metrics (`read_scores` puts the
    task's primary metric first)."""
    seen, primary = set(), []
    for s in scores:
        if (s.model, s.task) not in seen:
            seen.add((s.model, s.task))
            primary.append(s)
    return primary


def write_run_report(out: Path, models: Sequence[Mapping[str, object]], stages: Sequence[Mapping[str, object]],
                     scores: Sequence[TaskScore], chart: bool = True) -> str:  # fmt: skip
    """Write `summary.json` and `comparison.{md,csv}` (and `.png` with `chart`) into `out`;
    return the markdown table (or the line saying there are no scores)."""
    write_json(Path(out) / "summary.json", run_summary(models, stages, scores))
    return write_comparison(primary_scores(scores), out, "comparison", chart)[0]


def write_comparison(scores: Sequence[TaskScore], out: Path, name: str = "comparison",
                     chart: bool = True) -> Tuple[str, List[Path], str]:  # fmt: skip
    """`out/NAME.md`, `.csv` (and `.png` with `chart`) comparing `scores` (one primary score
    per model and task); returns the markdown table (or the line saying there are no scores),
    the files written, and "N tasks x M models"."""
    ensure_folder(out)
    comparison = build_comparison(scores)
    markdown = to_markdown(comparison) if scores else NO_SCORES
    written = [write_text(Path(out) / f"{name}.md", markdown), write_text(Path(out) / f"{name}.csv", to_csv(comparison))]
    if chart:
        save_chart(comparison, Path(out) / f"{name}.png")
        written.append(Path(out) / f"{name}.png")
    return markdown, written, f"{plural(len(comparison.tasks), 'task')} x {plural(len(comparison.models), 'model')}"
