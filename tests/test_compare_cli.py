"""`hear-matpac compare` on fabricated heareval 2021.1.3 result trees.

The trees follow what heareval writes: `embeddings/<module>[-<option>=<value>]/<task>/` with a
copy of the task's `task_metadata.json` and `test.predicted-scores.json` from
`heareval.predictions.runner` (`"test"` or `"fold00"`... entries, `aggregated_scores` for k-fold
tasks, `hparams`, `postprocessing`, `score_mode`, `embedding_path`). Expected tables are written
out by hand from the numbers put in.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from hear_matpac.cli import main
from hear_matpac.reports.results import find_scores

ESC50_A_FOLDS = [0.80, 0.82, 0.78, 0.81, 0.79]  # mean 0.8, sample std sqrt(0.001 / 4) = 0.0158113883
ESC50_B_FOLDS = [0.85, 0.86, 0.84, 0.85, 0.85]  # mean 0.85, sample std sqrt(0.0002 / 4) = 0.0070710678


def _split(metric: str, value: float, extra: dict | None = None) -> dict:
    entry = {"test_loss": 0.5, "test_score": value, f"test_{metric}": value}
    entry.update(extra or {})
    entry.update({"validation_score": 0.5, "epoch": 12, "time_in_min": 0.3})
    return entry


def _task(model_dir: Path, task: str, evaluation: list[str] | None, results: dict | None) -> None:
    task_dir = model_dir / task
    task_dir.mkdir(parents=True)
    if evaluation is not None:
        split_mode = "new_split_kfold" if any(k.startswith("fold") for k in results or {}) else "trainvaltest"
        (task_dir / "task_metadata.json").write_text(json.dumps(
            {"task_name": task.split("-")[0], "evaluation": evaluation, "split_mode": split_mode,
             "embedding_type": "scene", "prediction_type": "multiclass"}))  # fmt: skip
    if results is not None:
        results.update({"hparams": {"lr": 0.001, "hidden_dim": 1024}, "postprocessing": [], "score_mode": "max",
                        "embedding_path": str(task_dir)})  # fmt: skip
        (task_dir / "test.predicted-scores.json").write_text(json.dumps(results, indent=4))


def _kfold(metric: str, values: list[float], aggregate: dict | None) -> dict:
    results = {f"fold{i:02d}": _split(metric, v) for i, v in enumerate(values)}
    if aggregate is not None:
        results["aggregated_scores"] = aggregate
    return results


@pytest.fixture()
def runs(tmp_path: Path) -> tuple[Path, Path]:
    a = tmp_path / "runA" / "embeddings" / "hear_matpac"
    _task(a, "esc50-v2.0.0-full", ["top1_acc"], _kfold("top1_acc", ESC50_A_FOLDS, {
        "test_loss_mean": 0.5, "test_loss_std": 0.0, "test_score_mean": 0.8, "test_score_std": 0.0158113883,
        "test_top1_acc_mean": 0.8, "test_top1_acc_std": 0.0158113883}))  # fmt: skip
    _task(a, "speech_commands-v0.0.2-5h", ["top1_acc"], {"test": _split("top1_acc", 0.6512)})
    _task(a, "dcase2016_task2-hear2021-full", ["event_onset_200ms_fms", "segment_1s_er"],
          {"test": _split("event_onset_200ms_fms", math.nan, {"test_segment_1s_er": 0.9})})  # fmt: skip
    _task(a, "toy_events-v1-full", ["segment_1s_er"], {"test": _split("segment_1s_er", 0.40)})
    _task(a, "toy_segments-v1-full", ["segment_1s_er", "event_onset_200ms_fms"],
          {"test": _split("segment_1s_er", 0.55, {"test_event_onset_200ms_fms": 0.9})})  # fmt: skip

    b = tmp_path / "runB" / "embeddings" / "hear_matpac-layer=5"
    _task(b, "esc50-v2.0.0-full", ["top1_acc"], _kfold("top1_acc", ESC50_B_FOLDS, None))
    _task(b, "speech_commands-v0.0.2-5h", None, {"test": _split("top1_acc", 0.7001, {"test_mAP": 0.2})})
    _task(b, "dcase2016_task2-hear2021-full", ["event_onset_200ms_fms", "segment_1s_er"],
          {"test": _split("event_onset_200ms_fms", 0.3123, {"test_segment_1s_er": 0.7})})  # fmt: skip
    _task(b, "toy_events-v1-full", ["segment_1s_er"], {"test": _split("segment_1s_er", math.inf)})
    _task(b, "toy_segments-v1-full", ["segment_1s_er", "event_onset_200ms_fms"],
          {"test": _split("segment_1s_er", 0.35, {"test_event_onset_200ms_fms": 0.1})})  # fmt: skip
    _task(b, "maestro-v3.0.0-5h", ["event_onset_offset_50ms_20perc_fms"],
          {"test": _split("event_onset_offset_50ms_20perc_fms", 0.2)})  # fmt: skip
    _task(b, "nsynth_pitch-v2.2.3-5h", ["pitch_acc", "chroma_acc"], None)  # embedded, never predicted
    return tmp_path / "runA", tmp_path / "runB"


EXPECTED_MD = """\
| task | metric | hear_matpac | hear_matpac-layer=5 |
|---|---|---:|---:|
| dcase2016_task2-hear2021-full | event_onset_200ms_fms | NaN | **0.3123** |
| esc50-v2.0.0-full | top1_acc | 0.8000 ± 0.0158 | **0.8500 ± 0.0071** |
| maestro-v3.0.0-5h | event_onset_offset_50ms_20perc_fms | – | **0.2000** |
| speech_commands-v0.0.2-5h | top1_acc | 0.6512 | **0.7001** |
| toy_events-v1-full | segment_1s_er (lower is better) | **0.4000** | inf |
| toy_segments-v1-full | segment_1s_er (lower is better) | 0.5500 | **0.3500** |
"""


def test_compare_two_trees(runs: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    text = (runs[0] / "embeddings/hear_matpac/dcase2016_task2-hear2021-full/test.predicted-scores.json").read_text()
    assert "NaN" in text  # heareval's json.dumps writes these bare tokens
    assert "Infinity" in (runs[1] / "embeddings/hear_matpac-layer=5/toy_events-v1-full/test.predicted-scores.json").read_text()
    out = tmp_path / "report"
    assert main(["compare", str(runs[0]), str(runs[1]), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    markdown = (out / "comparison.md").read_text()
    assert markdown.startswith(EXPECTED_MD)
    assert captured.out.startswith(EXPECTED_MD)
    assert "6 tasks x 2 models" in captured.out
    assert "warning: no test.predicted-scores.json in" in captured.err and "nsynth_pitch-v2.2.3-5h" in captured.err

    rows = {row["task"]: row for row in csv.DictReader(io.StringIO((out / "comparison.csv").read_text()))}
    assert list(rows) == ["dcase2016_task2-hear2021-full", "esc50-v2.0.0-full", "maestro-v3.0.0-5h",
                          "speech_commands-v0.0.2-5h", "toy_events-v1-full", "toy_segments-v1-full"]  # fmt: skip
    esc = rows["esc50-v2.0.0-full"]
    assert (esc["metric"], esc["higher_is_better"], esc["best"]) == ("top1_acc", "true", "hear_matpac-layer=5")
    assert float(esc["hear_matpac"]) == 0.8 and float(esc["hear_matpac std"]) == 0.0158113883
    assert float(esc["hear_matpac-layer=5"]) == pytest.approx(0.85, abs=1e-12)
    assert float(esc["hear_matpac-layer=5 std"]) == pytest.approx(math.sqrt(0.0002 / 4), abs=1e-12)
    assert rows["dcase2016_task2-hear2021-full"]["hear_matpac"] == "nan"
    toy = rows["toy_events-v1-full"]
    assert (toy["hear_matpac-layer=5"], toy["higher_is_better"], toy["best"]) == ("inf", "false", "hear_matpac")
    assert rows["toy_segments-v1-full"]["best"] == "hear_matpac-layer=5"
    assert rows["maestro-v3.0.0-5h"]["hear_matpac"] == "" and rows["speech_commands-v0.0.2-5h"]["hear_matpac std"] == ""

    png = (out / "comparison.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert sorted(p.name for p in out.iterdir()) == ["comparison.csv", "comparison.md", "comparison.png"]


def test_same_model_name_in_two_runs_is_labelled_by_path(runs: tuple[Path, Path], tmp_path: Path) -> None:
    c = tmp_path / "runC" / "embeddings" / "hear_matpac"
    _task(c, "esc50-v2.0.0-full", ["top1_acc"], {"fold00": _split("top1_acc", 0.9)})
    scores, _ = find_scores([runs[0], tmp_path / "runC"])
    labels = {s.model for s in scores}
    assert labels == {str(runs[0] / "embeddings" / "hear_matpac"), str(c)}
    single = [s for s in scores if s.model == str(c)]
    assert [(s.task, s.value, s.std, s.folds) for s in single] == [("esc50-v2.0.0-full", 0.9, None, 1)]


def test_overlapping_runs_and_a_single_file(runs: tuple[Path, Path]) -> None:
    model_dir = runs[0] / "embeddings" / "hear_matpac"
    scores, _ = find_scores([runs[0], model_dir, model_dir / "toy_events-v1-full" / "test.predicted-scores.json"])
    assert sorted(s.task for s in scores) == sorted(p.name for p in model_dir.iterdir())
    assert {s.model for s in scores} == {"hear_matpac"}


def test_unreadable_scores_are_warned_and_skipped(runs: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    broken = runs[1] / "embeddings" / "hear_matpac-layer=5" / "maestro-v3.0.0-5h" / "test.predicted-scores.json"
    broken.write_text('{"test": {"test_score": 0.')
    assert main(["compare", str(runs[1]), "--out", str(tmp_path / "r"), "--no-chart"]) == 0
    captured = capsys.readouterr()
    assert f"warning: skipped {broken}: not valid JSON" in captured.err
    assert "maestro" not in captured.out
    assert not (tmp_path / "r" / "comparison.png").exists()


def test_nothing_to_compare_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    assert main(["compare", str(tmp_path / "absent"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"hear-matpac compare: error: no readable test.predicted-scores.json under {tmp_path / 'empty'}; "
        "run heareval.predictions.runner first",
        f"hear-matpac compare: error: {tmp_path / 'absent'}: no such result directory",
    ]


def test_inferred_metric_is_one_per_task_for_every_model(tmp_path: Path, capsys) -> None:
    """No task_metadata.json; the primary metric is segment_1s_er. Model a's F-measure happens
    to equal its error rate, which alone cannot tell them apart: b's scores decide for both."""
    _task(tmp_path / "runs" / "a", "toy_segments-v1-full", None,
          {"test": _split("segment_1s_er", 0.5, {"test_event_onset_200ms_fms": 0.5})})  # fmt: skip
    _task(tmp_path / "runs" / "b", "toy_segments-v1-full", None,
          {"test": _split("segment_1s_er", 0.35, {"test_event_onset_200ms_fms": 0.1})})  # fmt: skip
    assert main(["compare", str(tmp_path / "runs"), "--out", str(tmp_path / "r"), "--no-chart"]) == 0
    captured = capsys.readouterr()
    assert "| toy_segments-v1-full | segment_1s_er (lower is better) | 0.5000 | **0.3500** |" in captured.out
    assert "toy_segments-v1-full: no task_metadata.json; primary metric inferred as segment_1s_er" in captured.err


@pytest.mark.parametrize(
    "text",
    ['{"test": {"test_score": 1' + "0" * 399 + ', "test_top1_acc": 1' + "0" * 399 + "}}",
     '{"test": ' + "[" * 100_000 + "]" * 100_000 + "}"],
    ids=["400-digit-integer", "nested-100000-deep"],
)
def test_pathological_scores_are_skipped_with_a_warning(runs: tuple[Path, Path], tmp_path: Path, capsys, text) -> None:
    bad = runs[1] / "embeddings" / "hear_matpac-layer=5" / "maestro-v3.0.0-5h" / "test.predicted-scores.json"
    bad.write_text(text)
    (bad.parent / "task_metadata.json").unlink()  # the metric is inferred from the file too
    assert main(["compare", str(runs[1]), "--out", str(tmp_path / "r"), "--no-chart"]) == 0
    captured = capsys.readouterr()
    assert f"warning: skipped {bad}: " in captured.err
    assert "maestro" not in captured.out and "esc50" in captured.out


def test_symlinked_model_directory_is_followed_once(runs: tuple[Path, Path], tmp_path: Path) -> None:
    tree = tmp_path / "linked" / "embeddings"
    tree.mkdir(parents=True)
    (tree / "other_model").symlink_to(runs[1] / "embeddings" / "hear_matpac-layer=5", target_is_directory=True)
    (tree / "other_model" / "loop").symlink_to(tree, target_is_directory=True)  # a cycle
    scores, _ = find_scores([tmp_path / "linked"])
    assert sorted(s.task for s in scores) == [
        "dcase2016_task2-hear2021-full", "esc50-v2.0.0-full", "maestro-v3.0.0-5h",
        "speech_commands-v0.0.2-5h", "toy_events-v1-full", "toy_segments-v1-full",
    ]  # fmt: skip
    assert {s.model for s in scores} == {"other_model"}


def test_the_evaluate_output_folder_is_compared_without_warnings(tmp_path: Path, capsys) -> None:
    """`evaluate --out hear-runs` leaves the tasks it made beside heareval's embeddings tree."""
    runs = tmp_path / "hear-runs"
    (runs / "tasks" / "toy_scene-v1-full" / "16000" / "test").mkdir(parents=True)
    (runs / "tasks" / "toy_scene-v1-full" / "task_metadata.json").write_text(json.dumps({"evaluation": ["top1_acc"]}))
    _task(runs / "embeddings" / "hear_matpac", "toy_scene-v1-full", ["top1_acc"], {"test": _split("top1_acc", 0.75)})
    assert main(["compare", str(runs), "--out", str(tmp_path / "r"), "--no-chart"]) == 0
    captured = capsys.readouterr()
    assert "| toy_scene-v1-full | top1_acc | **0.7500** |" in captured.out
    assert captured.err == ""


def test_a_chart_of_many_tasks_keeps_a_readable_size(tmp_path: Path) -> None:
    """Issue 16, point 6: one bar group per task made an 800-task PNG 115,344 pixels wide."""
    pytest.importorskip("matplotlib")
    import struct

    for m in ("a", "b"):
        for t in range(120):
            _task(tmp_path / "runs" / m, f"task{t:03d}", ["top1_acc"], {"test": _split("top1_acc", (t % 7) / 7)})
    assert main(["compare", str(tmp_path / "runs"), "--out", str(tmp_path / "r")]) == 0
    width, height = struct.unpack(">II", (tmp_path / "r" / "comparison.png").read_bytes()[16:24])
    assert width <= 3000 and height <= 1000, (width, height)


def test_chart_labels_do_not_run_together_and_stars_clear_the_error_bars():
    """comparison.png with long task names on few tasks (unslanted before) and a large std."""
    pytest.importorskip("matplotlib")
    from hear_matpac.reports.chart import bar_chart
    from hear_matpac.reports.comparison import build_comparison
    from hear_matpac.reports.results import TaskScore

    tasks = ["beijing_opera_percussion_long_name", "vocal_imitations_long_name", "dcase2016_task2_hear2021_full"]
    scores = [TaskScore(model, Path(model), task, "test_score", value, std, 5, Path(model))
              for task in tasks for model, value, std in (("a", 0.8, 0.15), ("b", 0.6, 0.02))]  # fmt: skip
    figure = bar_chart(build_comparison(scores))
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    axes = figure.axes[0]
    boxes = [label.get_window_extent(renderer) for label in axes.get_xticklabels()]
    assert len(boxes) == 3
    for left, right in zip(boxes, boxes[1:]):  # slanted labels: their text lines never cross
        assert not left.overlaps(right) or all(abs(a.get_rotation()) > 0 for a in axes.get_xticklabels())
    stars = [t for t in axes.texts if t.get_text() == "★"]
    assert len(stars) == 3
    for star in stars:
        assert star.xy[1] == pytest.approx(0.8 + 0.15)  # the best bar's top plus its error bar
