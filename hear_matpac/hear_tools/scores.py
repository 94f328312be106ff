"""heareval's test scores for the `evaluate` and `sweep` jobs: every metric of a task, as a table.

Parsing lives in `results.py` (shared with `compare`); this adds the missing-file message and
the plain-text table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

from ..results import SCORES_FILE, TaskScore, read_task_scores


def read_scores(task_embeddings_dir: Path) -> List[TaskScore]:
    """The test score of every metric in the task's `evaluation` list, from
    `test.predicted-scores.json` (trainvaltest: `test`; k-fold: `aggregated_scores`)."""
    task_dir = Path(task_embeddings_dir)
    path = task_dir / SCORES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the predictions runner on {task_dir}")
    return read_task_scores(path)


def format_scores(scores: Sequence[TaskScore]) -> str:
    """A plain-text table of `scores`."""
    width = max([len("task")] + [len(s.task) for s in scores])
    mwidth = max([len("metric")] + [len(s.metric) for s in scores])
    lines = [f"{'task':<{width}}  {'metric':<{mwidth}}  test score"]
    for s in scores:
        spread = f" +- {s.std:.4f} ({s.folds} folds)" if s.std is not None else ""
        lines.append(f"{s.task:<{width}}  {s.metric:<{mwidth}}  {s.value:.4f}{spread}")
    return "\n".join(lines)


def score_json(score: TaskScore) -> Dict[str, object]:
    """`score` for a JSON summary: task, metric, value, std (None for one test split), folds."""
    return {"task": score.task, "metric": score.metric, "value": score.value, "std": score.std, "folds": score.folds}
