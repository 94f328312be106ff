"""Read heareval's test scores back: one row per task and metric."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

SCORES_FILE = "test.predicted-scores.json"


@dataclass(frozen=True)
class Score:
    """A task's test score for one metric: the mean over folds, with its std for k-fold."""

    task: str
    metric: str
    value: float
    std: float | None = None
    folds: int = 1

    @property
    def finite(self) -> bool:
        return math.isfinite(self.value)


def read_scores(task_embeddings_dir: Path) -> List[Score]:
    """The test score of every metric in the task's `evaluation` list, from
    `test.predicted-scores.json` (trainvaltest: `test`; k-fold: `aggregated_scores`)."""
    task_dir = Path(task_embeddings_dir)
    path = task_dir / SCORES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the predictions runner on {task_dir}")
    results = json.loads(path.read_text())
    metadata = json.loads((task_dir / "task_metadata.json").read_text())
    name = metadata["task_name"]
    rows = []
    for metric in metadata["evaluation"]:
        key = f"test_{metric}"
        if "aggregated_scores" in results:
            agg = results["aggregated_scores"]
            rows.append(Score(name, metric, float(agg[f"{key}_mean"]), float(agg[f"{key}_std"]),
                              len(metadata["splits"])))
        else:
            rows.append(Score(name, metric, float(results["test"][key])))
    return rows


def format_scores(scores: Sequence[Score]) -> str:
    """A plain-text table of `scores`."""
    width = max([len("task")] + [len(s.task) for s in scores])
    mwidth = max([len("metric")] + [len(s.metric) for s in scores])
    lines = [f"{'task':<{width}}  {'metric':<{mwidth}}  test score"]
    for s in scores:
        spread = f" +- {s.std:.4f} ({s.folds} folds)" if s.std is not None else ""
        lines.append(f"{s.task:<{width}}  {s.metric:<{mwidth}}  {s.value:.4f}{spread}")
    return "\n".join(lines)
