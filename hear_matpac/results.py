"""Read heareval result trees: each task's test scores (primary metric first), per model.

heareval 2021.1.3 lays a run out as `embeddings/<model>/<task>/`, where `<model>` is the module
name followed, for `--model-options '{"k": v}'`, by `-k=v` per option (both slugified, so
`{"layer": -1}` becomes `hear_matpac-layer=1`). `heareval.predictions.runner` writes
`test.predicted-scores.json` there: one entry per test split (`"test"`, or `"fold00"`...
for k-fold tasks), each with `test_score` (the first metric of `task_metadata.json`
`evaluation`) and `test_<metric>`; for k-fold tasks also `"aggregated_scores"` with
`<key>_mean` / `<key>_std` over folds. Its JSON may hold `NaN` and `Infinity`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

SCORES_FILE = "test.predicted-scores.json"
METADATA_FILE = "task_metadata.json"
AGGREGATE_KEY = "aggregated_scores"
# heareval 2021.1.3 `score.available_scores`, in its order; only segment_1s_er is minimised.
KNOWN_METRICS = (
    "top1_acc", "pitch_acc", "chroma_acc", "event_onset_200ms_fms", "event_onset_50ms_fms",
    "event_onset_offset_50ms_20perc_fms", "segment_1s_er", "mAP", "d_prime", "aucroc",
)  # fmt: skip
LOWER_IS_BETTER = frozenset({"segment_1s_er"})
UNKNOWN_METRIC = "score"


@dataclass(frozen=True)
class TaskScore:
    """One model's primary test score on one task.

    `value`: the test score, or its mean over folds (may be NaN or infinite as written);
    `std`: standard deviation over folds, None for a single test split.
    """

    model: str
    model_dir: Path
    task: str
    metric: str
    value: float
    std: Optional[float]
    folds: int
    source: Path

    @property
    def finite(self) -> bool:
        return math.isfinite(self.value)


def find_scores(runs: Sequence[Path]) -> tuple[list[TaskScore], list[str]]:
    """Every `test.predicted-scores.json` under the `runs` (directories at any level of a
    heareval tree, or such files), read; plus a warning for each that could not be read and
    each task directory without scores. Models are labelled by their directory name, or by
    its path where two directories share a name."""
    scores: list[TaskScore] = []
    warnings: list[str] = []
    seen: set[str] = set()
    for run in runs:
        if not run.exists():
            raise FileNotFoundError(f"{run}: no such result directory")
        files = [run] if run.is_file() else sorted(run.rglob(SCORES_FILE))
        for path in files:
            if os.path.abspath(path) in seen:  # overlapping RUN arguments
                continue
            seen.add(os.path.abspath(path))
            try:
                scores.append(read_task_score(path))
            except (OSError, ValueError, TypeError) as err:
                warnings.append(f"skipped {err}")
        if run.is_dir():
            warnings += [
                f"no {SCORES_FILE} in {meta.parent} (predictions not run yet?)"
                for meta in sorted(run.rglob(METADATA_FILE))
                if not (meta.parent / SCORES_FILE).is_file()
            ]
    return _disambiguate(scores), list(dict.fromkeys(warnings))


def read_task_score(path: Path) -> TaskScore:
    """The primary score in one `test.predicted-scores.json` (`ValueError` naming the file
    when it holds none)."""
    return read_task_scores(path)[0]


def read_task_scores(path: Path) -> list[TaskScore]:
    """Every metric of the task's `evaluation` list in one `test.predicted-scores.json`, the
    primary one first (only that one without `task_metadata.json`); a metric heareval did not
    write comes back as NaN. `ValueError` naming the file when it holds no score."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))  # NaN / Infinity accepted
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(results, Mapping):
        raise ValueError(f"{path}: expected a JSON object, found {type(results).__name__}")
    folds = [v for k, v in results.items() if k != AGGREGATE_KEY and isinstance(v, Mapping) and "test_score" in v]
    if not folds:
        raise ValueError(f"{path}: no test split with a 'test_score' entry")
    evaluation = _evaluation(path.parent / METADATA_FILE)
    primary = evaluation[0] if evaluation else _primary_metric(folds[0])
    aggregate = results.get(AGGREGATE_KEY)
    scores = []
    for metric in [primary] + evaluation[1:]:
        key = f"test_{metric}"
        if not all(key in f for f in folds):
            key = "test_score" if metric == primary else None
        if key is None:
            value, std = math.nan, None
        elif isinstance(aggregate, Mapping) and f"{key}_mean" in aggregate:
            value, std = _number(aggregate[f"{key}_mean"], path), _number(aggregate.get(f"{key}_std", math.nan), path)
        elif len(folds) == 1:
            value, std = _number(folds[0][key], path), None
        else:
            value, std = _mean_std([_number(f[key], path) for f in folds])
        scores.append(TaskScore(
            model=path.parent.parent.name, model_dir=path.parent.parent, task=path.parent.name,
            metric=metric, value=value, std=std, folds=len(folds), source=path,
        ))  # fmt: skip
    return scores


def _evaluation(metadata_path: Path) -> list[str]:
    """The task's `evaluation` metrics from `task_metadata.json`, or [] where it cannot say."""
    if metadata_path.is_file():
        try:
            evaluation = json.loads(metadata_path.read_text(encoding="utf-8")).get("evaluation")
        except (OSError, ValueError, AttributeError):
            evaluation = None
        if isinstance(evaluation, list) and evaluation and all(isinstance(m, str) for m in evaluation):
            return evaluation
    return []


def _primary_metric(fold: Mapping[str, Any]) -> str:
    """Without metadata: the known metric whose value is `test_score` (heareval sets it to the
    first metric of the task's `evaluation` list)."""
    present = [m for m in KNOWN_METRICS if f"test_{m}" in fold]
    for metric in present:
        if _same(fold[f"test_{metric}"], fold["test_score"]):
            return metric
    return present[0] if len(present) == 1 else UNKNOWN_METRIC


def _number(value: Any, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{path}: score {value!r} is not a number")
    return float(value)


def _same(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b) or (math.isnan(float(a)) and math.isnan(float(b)))
    except (TypeError, ValueError):
        return False


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """NaN-skipping mean and sample standard deviation (as pandas, which heareval uses)."""
    kept = [v for v in values if not math.isnan(v)]
    if not kept:
        return math.nan, math.nan
    mean = math.fsum(kept) / len(kept)
    if len(kept) < 2:
        return mean, math.nan
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in kept) / (len(kept) - 1))


def _disambiguate(scores: Iterable[TaskScore]) -> list[TaskScore]:
    scores = list(scores)
    dirs_by_name: dict[str, set[str]] = {}
    for s in scores:
        dirs_by_name.setdefault(s.model, set()).add(os.path.abspath(s.model_dir))
    return [
        s if len(dirs_by_name[s.model]) == 1 else replace(s, model=str(s.model_dir))
        for s in scores
    ]
