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
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence
from ..io import InputError, MissingFile


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
    heareval tree, or such files; symlinked directories followed, each real directory once),
    read; plus a warning for each that could not be read, each embedded task without scores
    and each task whose primary metric had to be inferred. Each task has one metric for every
    model. Models are labelled by their directory name, or by its path where two directories
    share a name."""
    files: list[Path] = []
    warnings: list[str] = []
    seen: set[str] = set()
    for run in runs:
        if not run.exists():
            raise MissingFile(f"{run}: no such result directory")
        found, unscored = ([run], []) if run.is_file() else _walk(run)
        for path in found:
            if os.path.realpath(path) not in seen:  # overlapping RUN arguments, links to a model twice
                seen.add(os.path.realpath(path))
                files.append(path)
        warnings += [f"no {SCORES_FILE} in {task} (predictions not run yet?)" for task in unscored]
    primaries = _task_primaries(files, warnings)
    scores: list[TaskScore] = []
    for path in files:
        try:
            scores.append(read_task_scores(path, primaries.get(path.parent.name))[0])
        except (OSError, ValueError, TypeError) as err:
            warnings.append(f"skipped {err}")
    return _disambiguate(scores), list(dict.fromkeys(warnings))


def _walk(root: Path) -> tuple[list[Path], list[Path]]:
    """Scores files under `root`, and task directories with `task_metadata.json` but no scores
    (a task's own folder, holding its audio under a sample-rate folder such as `16000/`, is not
    one); symlinks followed, each real directory visited once (no cycles)."""
    found: list[Path] = []
    unscored: list[Path] = []
    visited: set[tuple[int, int]] = set()
    for top, dirs, names in os.walk(root, followlinks=True):
        stat = os.stat(top)
        if (stat.st_dev, stat.st_ino) in visited:
            dirs[:] = []
            continue
        visited.add((stat.st_dev, stat.st_ino))
        dirs.sort()
        if SCORES_FILE in names:
            found.append(Path(top) / SCORES_FILE)
        elif METADATA_FILE in names and not any(d.isdigit() for d in dirs):
            unscored.append(Path(top))
    return sorted(found), sorted(unscored)


def _task_primaries(files: Sequence[Path], warnings: list[str]) -> dict[str, str]:
    """Task -> the one primary metric for every model's file of that task: the first metric of
    any copy of its `task_metadata.json`; else inferred the same way for all files (the metric
    equal to `test_score` in every file, heareval's metric order breaking ties), with a
    warning saying so."""
    by_task: dict[str, list[Path]] = {}
    for path in files:
        by_task.setdefault(path.parent.name, []).append(path)
    primaries = {}
    for task, paths in by_task.items():
        declared = [e[0] for e in (_evaluation(p.parent / METADATA_FILE) for p in paths) if e]
        if declared:
            primaries[task] = declared[0]
            continue
        candidates = []
        for path in paths:
            try:
                folds = _folds(_load_results(path), path)
                candidates.append(set.intersection(*(set(_primary_candidates(f)) for f in folds)))
            except ValueError:
                continue  # warned about when it is read
        if not candidates:
            continue
        in_all = [m for m in KNOWN_METRICS if all(m in c for c in candidates)]
        in_any = [m for m in KNOWN_METRICS if any(m in c for c in candidates)]
        primaries[task] = (in_all or in_any or [UNKNOWN_METRIC])[0]
        warnings.append(
            f"{task}: no {METADATA_FILE}; primary metric inferred as {primaries[task]} for every model"
        )
    return primaries


def read_task_score(path: Path) -> TaskScore:
    """The primary score in one `test.predicted-scores.json` (`ValueError` naming the file
    when it holds none)."""
    return read_task_scores(path)[0]


def read_task_scores(path: Path, primary: Optional[str] = None) -> list[TaskScore]:
    """Every metric of the task's `evaluation` list in one `test.predicted-scores.json`, the
    primary one first (only that one without `task_metadata.json`); a metric heareval did not
    write comes back as NaN. `primary`: the metric to report first where the metadata does
    not say (default: inferred from this file alone). `ValueError` naming the file when it
    holds no score or cannot be read as numbers."""
    results = _load_results(path)
    folds = _folds(results, path)
    evaluation = _evaluation(path.parent / METADATA_FILE)
    if evaluation:
        primary = evaluation[0]
    elif primary is None:
        primary = (_primary_candidates(folds[0]) or [UNKNOWN_METRIC])[0]
    aggregate = results.get(AGGREGATE_KEY)
    scores = []
    for metric in [primary] + evaluation[1:]:
        key = "test_score" if metric == UNKNOWN_METRIC else f"test_{metric}"
        if not all(key in f for f in folds):
            key = "test_score" if metric == primary and evaluation else None
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


def _load_results(path: Path) -> Mapping[str, Any]:
    """The JSON object in a scores file; `ValueError` naming the file for anything else
    (including JSON nested too deep for the parser)."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))  # NaN / Infinity accepted
    except (ValueError, RecursionError) as err:
        raise InputError(f"{path}: not valid JSON ({type(err).__name__}: {str(err)[:80]})") from None
    if not isinstance(results, Mapping):
        raise InputError(f"{path}: expected a JSON object, found {type(results).__name__}")
    return results


def _folds(results: Mapping[str, Any], path: Path) -> list[Mapping[str, Any]]:
    folds = [v for k, v in results.items() if k != AGGREGATE_KEY and isinstance(v, Mapping) and "test_score" in v]
    if not folds:
        raise InputError(f"{path}: no test split with a 'test_score' entry")
    return folds


def _evaluation(metadata_path: Path) -> list[str]:
    """The task's `evaluation` metrics from `task_metadata.json`, or [] where it cannot say."""
    if metadata_path.is_file():
        try:
            evaluation = json.loads(metadata_path.read_text(encoding="utf-8")).get("evaluation")
        except (OSError, ValueError, RecursionError, AttributeError):
            evaluation = None
        if isinstance(evaluation, list) and evaluation and all(isinstance(m, str) for m in evaluation):
            return evaluation
    return []


def _primary_candidates(fold: Mapping[str, Any]) -> list[str]:
    """Known metrics whose value in `fold` is its `test_score` (heareval sets that to the first
    metric of the task's `evaluation` list), in heareval's metric order."""
    return [m for m in KNOWN_METRICS if f"test_{m}" in fold and _same(fold[f"test_{m}"], fold["test_score"])]


def _number(value: Any, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{path}: score {str(value)[:40]!r} is not a number")
    try:
        return float(value)
    except OverflowError:  # an integer of hundreds of digits
        raise InputError(f"{path}: score {str(value)[:20]}... ({len(str(value))} digits) is too large") from None


def _same(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b) or (math.isnan(float(a)) and math.isnan(float(b)))
    except (TypeError, ValueError, OverflowError):
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

def read_scores(task_embeddings_dir: Path) -> List[TaskScore]:
    """For the `evaluate` and `sweep` jobs: the test score of every metric in the task's `evaluation` list, from
    `test.predicted-scores.json` (trainvaltest: `test`; k-fold: `aggregated_scores`)."""
    task_dir = Path(task_embeddings_dir)
    path = task_dir / SCORES_FILE
    if not path.is_file():
        raise MissingFile(f"{path} is missing: run the predictions runner on {task_dir}")
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


NON_FINITE = 'scores that are NaN or infinite are the strings "nan", "inf", "-inf"'


def json_number(value: Optional[float]) -> object:
    """A score for strict JSON: finite numbers as they are, NaN and infinities as the strings
    "nan", "inf", "-inf" (JSON has no such numbers), None as null."""
    if value is None or math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def score_json(score: TaskScore) -> Dict[str, object]:
    """`score` for strict JSON (the one serialiser of scores: `summary.json`, `sweep.json`):
    model, task, metric, value and std (`json_number`; std None for one test split), folds."""
    return {"model": score.model, "task": score.task, "metric": score.metric, "value": json_number(score.value),
            "std": json_number(score.std), "folds": score.folds}
