"""What `sweep` writes: a table (`sweep.md`, `sweep.csv`), `sweep.json` (strict JSON, scores
through `results.score_json`, the one score serialiser) and a plot (`sweep.png`) of each
setting's test scores and encoding cost. Plain rows in, files out: where the rows come from is
`evaluate.sweep`'s business."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..io import write_json
from .comparison import format_value
from .results import LOWER_IS_BETTER, TaskScore, json_number, score_json
from .tables import csv_table, markdown_table, save_png, write_text


@dataclass(frozen=True)
class SweepRow:
    """One setting's results: its label and options, the cost of embedding (`embed_seconds`:
    the embedding runners' wall time, summed over its tasks; `encode_seconds`: heareval's own
    encoding time, summed; `peak_rss_mib`: the largest peak memory of its embedding runners;
    None where unknown), the audio it embedded, and the test scores of every task (in each
    task's `evaluation` order)."""

    label: str
    options: Dict[str, object]
    embed_seconds: Optional[float]
    encode_seconds: Optional[float]
    audio_seconds: float
    peak_rss_mib: Optional[float]
    scores: Tuple[TaskScore, ...]

    @property
    def audio_per_second(self) -> float:
        """Audio-seconds embedded per second of heareval's encoding time (NaN where unknown)."""
        encode = self.encode_seconds
        return self.audio_seconds / encode if encode is not None and encode > 0 else math.nan


def _metric_columns(rows: Sequence[SweepRow], all_metrics: bool) -> List[Tuple[str, str]]:
    """(task, metric) columns: every task's primary metric (its first), or all its metrics."""
    columns: List[Tuple[str, str]] = []
    for row in rows:
        for s in row.scores:
            first = all(c[0] != s.task for c in columns)
            if (all_metrics or first) and (s.task, s.metric) not in columns:
                columns.append((s.task, s.metric))
    return columns


def _fixed(value: Optional[float], digits: int) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def table(rows: Sequence[SweepRow], setting_header: str = "setting", all_metrics: bool = False,
          for_csv: bool = False) -> Tuple[List[str], List[List[str]]]:  # fmt: skip
    """Header and cells: the setting, its cost, then one score column per (task, metric);
    metrics where lower is better say so in the header. For people, k-fold scores read
    "mean ± std" at 4 decimals; `for_csv` gives numbers only, at full precision, with the std
    over folds in a "... std" column after each score column that has one. An unknown cost is
    an empty cell."""
    columns = _metric_columns(rows, all_metrics)
    found = [{(s.task, s.metric): s for s in row.scores} for row in rows]
    with_std = {key for key in columns if any(f.get(key) is not None and f[key].std is not None for f in found)}
    header = [setting_header, "embed stage s", "encoding s", "audio-s per s", "peak RSS MiB"]
    for task, metric in columns:
        name = f"{task} {metric}" + (" (lower is better)" if metric in LOWER_IS_BETTER else "")
        header += [name, f"{name} std"] if for_csv and (task, metric) in with_std else [name]
    cells = []
    for row, scores in zip(rows, found):
        line = [row.label, _fixed(row.embed_seconds, 1), _fixed(row.encode_seconds, 2),
                _fixed(row.audio_per_second, 1), _fixed(row.peak_rss_mib, 0)]  # fmt: skip
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
    (audio-seconds per second, peak memory of the embedding runners)."""
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
    memory = [math.nan if r.peak_rss_mib is None else r.peak_rss_mib for r in rows]
    memory_axes.plot(xs, memory, marker="s", color="tab:red")
    memory_axes.set_ylabel("peak RSS of the embedding runner (MiB)", color="tab:red")
    cost_axes.set_title("encoding cost")
    for axes in (scores_axes, cost_axes):
        axes.set_xticks(xs)
        axes.set_xticklabels([r.label for r in rows], fontsize=8)
        axes.set_xlabel(xlabel)
        axes.grid(alpha=0.3)
    save_png(figure, path, dpi=110)


def row_json(row: SweepRow) -> Dict[str, object]:
    """One row for strict JSON (`json_number` for every figure, `score_json` for the scores)."""
    return {"label": row.label, "options": row.options, "embed_stage_seconds": json_number(row.embed_seconds),
            "encode_seconds": json_number(row.encode_seconds), "audio_seconds": json_number(row.audio_seconds),
            "audio_per_second": json_number(row.audio_per_second), "peak_rss_mib": json_number(row.peak_rss_mib),
            "scores": [score_json(s) for s in row.scores]}  # fmt: skip


def write_outputs(rows: Sequence[SweepRow], out_dir: Path, stem: str = "sweep", setting_header: str = "setting",
                  all_metrics: bool = False, plot: bool = True) -> List[Path]:  # fmt: skip
    """`<stem>.md`, `<stem>.csv`, `<stem>.json` and (with `plot`) `<stem>.png` in `out_dir`,
    each written atomically."""
    out = Path(out_dir)
    written = [write_text(out / f"{stem}.md", markdown_table(*table(rows, setting_header, all_metrics))),
               write_text(out / f"{stem}.csv", csv_table(*table(rows, setting_header, all_metrics, for_csv=True)))]  # fmt: skip
    write_json(out / f"{stem}.json", [row_json(r) for r in rows])
    written.append(out / f"{stem}.json")
    if plot:
        save_plot(rows, out / f"{stem}.png", setting_header)
        written.append(out / f"{stem}.png")
    return written
