"""HEAR plugins other than hear_matpac in `evaluate` (issue 23, items 1 and 5): a plugin that
takes no weights and one given weights run through hear-validator, heareval's embedding and
predictions runners and the comparison table next to hear_matpac, and resume; embeddings a
plugin writes are checked (float32, the declared sizes, finite, timestamps increasing) before
predictions read them, a bad plugin failing its stage in one line.

The plugin is `tests/plugins/toy_hear_plugin` (log band energies; no hear_matpac in it), made
importable here and in every tool process through sys.path and PYTHONPATH."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from hear_matpac.evaluate.embedding_check import DECLARED_FILE, BadEmbeddings, check_task_embeddings
from hear_matpac.weights.locate import TINY_UNTRAINED

from conftest import hear_matpac_cli, need

REPO = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).resolve().parent / "plugins"
TOY = "toy_hear_plugin"
TASKS = ("synth_events", "synth_scene_multiclass")  # one event task (timestamps), one scene task
COMMON = ["--tasks", ",".join(TASKS), "--grid-points", "1", "--no-chart", "--tensorflow", "stand-in",
          "--devices", "cpu", "--jobs", "1"]  # fmt: skip


@pytest.fixture
def toy(tmp_path, monkeypatch) -> Path:
    """The toy plugin importable here and in every child; returns the folder of its records
    (one per `load_model` call: which tool, what it received)."""
    records = tmp_path / "records"
    records.mkdir()
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(PLUGINS), str(REPO)]))
    monkeypatch.setenv("TOY_RECORDS", str(records))
    return records


def _records(folder: Path) -> list:
    return sorted((r["tool"], tuple(r["args"]), json.dumps(r["options"], sort_keys=True))
                  for r in (json.loads(p.read_text()) for p in folder.glob("*.json")))  # fmt: skip


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _status(summary: dict) -> dict:
    """(model folder, task or "validate") -> status."""
    return {(s.get("model_folder") or s["model"], s.get("task") or s["stage"]): s["status"] for s in summary["stages"]}


@pytest.mark.slow
def test_a_foreign_plugin_with_and_without_weights_runs_end_to_end_and_resumes(tmp_path, toy):
    need("heareval", "the HEAR tools")
    need("pytorch_lightning", "heareval's predictions runner")
    gains = tmp_path / "gains.txt"
    gains.write_text(" ".join(["2.0"] * 8) + "\n")
    out = tmp_path / "out"
    argv = ["evaluate", "--out", str(out), *COMMON, "--model", f"hear_matpac:{TINY_UNTRAINED}",
            "--model", TOY, "--model", f"{TOY}:{gains}"]  # fmt: skip
    first = hear_matpac_cli(*argv, cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    summary = _summary(out)
    models = {(m["module"], m["weights"]): m["folder"] for m in summary["models"]}
    assert set(models) == {("hear_matpac", str(TINY_UNTRAINED)), (TOY, ""), (TOY, str(gains))}
    assert set(_status(summary).values()) == {"ran"} and len(summary["stages"]) == 3 + 3 * len(TASKS)
    # what the plugin received: nothing without weights, the path with them, in both tools
    assert _records(toy) == sorted([(tool, args, "{}") for tool in ("validate", "embed") for args in ((), (str(gains),))
                                    for _ in ([None] if tool == "validate" else TASKS)])  # fmt: skip
    # every model has a finite score on every task, in summary.json and in the one table
    primary = {(s["model"], s["task"]): s["value"] for s in summary["scores"]}
    for folder in models.values():
        for task in TASKS:
            assert math.isfinite(primary[(folder, task)]), (folder, task)
    table = (out / "comparison.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| task"))
    assert all(folder in header for folder in models.values())
    assert all(any(line.startswith(f"| {task} ") and "–" not in line for line in table.splitlines()) for task in TASKS)
    assert table in first.stdout.replace("\r", "")  # the table printed is the table written
    # the same command again: every stage and validation is skipped; no plugin is loaded again
    loads = sorted(p.name for p in toy.iterdir())
    again = hear_matpac_cli(*argv, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert set(_status(_summary(out)).values()) == {"skipped"}
    assert sorted(p.name for p in toy.iterdir()) == loads
    assert (out / "comparison.md").read_text() == table


BAD = {"nan": "values are NaN or infinite", "size": "not (", "float64": "dtype float64, not float32",
       "timestamps": "timestamps not increasing"}  # fmt: skip


@pytest.mark.slow
def test_bad_embeddings_fail_their_stage_in_one_line_and_the_others_go_on(tmp_path, toy, capsys):
    need("heareval", "the HEAR tools")
    need("pytorch_lightning", "heareval's predictions runner")
    out = tmp_path / "out"
    specs = [TOY] + [f'{TOY}::{{"bad": "{bad}"}}' for bad in BAD]
    result = hear_matpac_cli("evaluate", "--out", str(out), *COMMON, *[a for s in specs for a in ("--model", s)], cwd=tmp_path)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    summary = _summary(out)
    folder = {m["options"].get("bad", ""): m["folder"] for m in summary["models"]}
    stages = {(s["model_folder"], s["task"]): s for s in summary["stages"] if "task" in s}
    for bad, folder_name in folder.items():
        for task in TASKS:
            stage = stages[(folder_name, task)]
            # a scene task has no timestamps: the plugin that spoils only them passes there
            if not bad or (bad == "timestamps" and task == "synth_scene_multiclass"):
                assert stage["status"] == "ran", stage
                continue
            assert stage["status"] == "failed", stage
            assert "embeddings rejected before predictions" in stage["message"] and BAD[bad] in stage["message"], stage
            assert "\n" not in stage["message"] and "Traceback" not in stage["message"]
            log = Path(stage["log"])
            assert log.name == "embed.log" and log.is_file()
            assert not (log.parent / "predict.log").exists()  # predictions never read them
    assert {s["task"] for s in summary["scores"] if s["model"] == folder[""]} == set(TASKS)  # the good one scored
    failed = [line for line in result.stderr.splitlines() if " failed: " in line]
    assert len(failed) == 2 * len(BAD) - 1 and all("embeddings rejected" in line and "embed.log" in line for line in failed)
    assert "Traceback" not in result.stderr


# --- the check on fabricated heareval embedding folders ---------------------------------------

def _task(root: Path, kind: str, rows: int = 3, size: int = 4, declared: dict | None = None) -> Path:
    """A task folder as heareval 2021.1.3's embedding runner writes it: metadata, split lists,
    per file `<split>/<file>.embedding.npy` (and `.timestamps.json` for events); good data."""
    task = root / "embeddings" / "toy" / "task"
    (task / "train").mkdir(parents=True)
    (task / "task_metadata.json").write_text(json.dumps({"embedding_type": kind, "splits": ["train"]}))
    names = ["a.wav", "b.wav"]
    (task / "train.json").write_text(json.dumps({n: ["x"] for n in names}))
    for n in names:
        shape = (size,) if kind == "scene" else (rows, size)
        np.save(task / "train" / f"{n}.embedding.npy", np.arange(np.prod(shape), dtype=np.float32).reshape(shape))
        if kind == "event":
            (task / "train" / f"{n}.timestamps.json").write_text(json.dumps([25.0 * (i + 1) for i in range(rows)]))
    sizes = {"scene_embedding_size": size, "timestamp_embedding_size": size}
    (root / "embeddings" / DECLARED_FILE).write_text(json.dumps({"module": "toy", "sample_rate": 16000, **sizes, **(declared or {})}))
    return task


def _check(task: Path) -> None:
    check_task_embeddings(task, task.parents[1] / DECLARED_FILE)


@pytest.mark.parametrize("kind", ["scene", "event"])
def test_good_embeddings_pass_the_check(tmp_path, kind):
    _check(_task(tmp_path, kind))


def _save(task: Path, array: np.ndarray, name: str = "b.wav") -> None:
    np.save(task / "train" / f"{name}.embedding.npy", array)


@pytest.mark.parametrize("kind, spoil, problem", [
    ("scene", lambda t: _save(t, np.array([0, np.nan, 0, 0], np.float32)), "b.wav.embedding.npy: 1 of 4 values are NaN"),
    ("event", lambda t: _save(t, np.full((3, 4), np.inf, np.float32)), "12 of 12 values are NaN or infinite"),
    ("scene", lambda t: _save(t, np.zeros(4, np.float64)), "dtype float64, not float32"),
    ("scene", lambda t: _save(t, np.zeros(4, np.float16)), "dtype float16, not float32"),
    ("scene", lambda t: _save(t, np.zeros(5, np.float32)), "shape (5,), not (scene_embedding_size,) with the declared size 4"),
    ("scene", lambda t: _save(t, np.zeros((1, 4), np.float32)), "shape (1, 4), not (scene_embedding_size,)"),
    ("event", lambda t: _save(t, np.zeros((3, 3), np.float32)), "shape (3, 3), not (T, timestamp_embedding_size)"),
    ("event", lambda t: _save(t, np.zeros(4, np.float32)), "shape (4,), not (T, timestamp_embedding_size)"),
    ("event", lambda t: _save(t, np.zeros((0, 4), np.float32)), "shape (0, 4)"),
    ("event", lambda t: (t / "train" / "b.wav.timestamps.json").write_text("[25, 50, 50]"), "timestamps not increasing (50 ms after 50 ms)"),
    ("event", lambda t: (t / "train" / "b.wav.timestamps.json").write_text("[75, 50, 25]"), "timestamps not increasing (50 ms after 75 ms)"),
    ("event", lambda t: (t / "train" / "b.wav.timestamps.json").write_text("[25, 50]"), "2 timestamps for 3 embeddings"),
    ("event", lambda t: (t / "train" / "b.wav.timestamps.json").write_text("[25, NaN, 75]"), "1 timestamps are NaN or infinite"),
    ("event", lambda t: (t / "train" / "b.wav.timestamps.json").unlink(), "b.wav.timestamps.json: not a list of numbers"),
    ("scene", lambda t: (t / "train" / "b.wav.embedding.npy").unlink(), "train/b.wav.embedding.npy: missing"),
    ("scene", lambda t: (t / "train" / "b.wav.embedding.npy").write_bytes(b"not numpy"), "not a readable .npy array"),
    ("scene", lambda t: _save(t, np.array([{"a": 1}], dtype=object)), "not a readable .npy array"),
])  # fmt: skip
def test_each_bad_embedding_is_named_in_one_line(tmp_path, kind, spoil, problem):
    task = _task(tmp_path, kind)
    spoil(task)
    with pytest.raises(BadEmbeddings) as caught:
        _check(task)
    message = str(caught.value)
    assert problem in message and "\n" not in message and message.startswith("embeddings rejected before predictions: train/b.wav")


def test_every_file_is_checked_and_counted(tmp_path):
    task = _task(tmp_path, "scene")
    _save(task, np.zeros(4, np.float64), "a.wav")
    _save(task, np.zeros(3, np.float32), "b.wav")
    with pytest.raises(BadEmbeddings, match=r"train/a\.wav\.embedding\.npy: dtype float64.*\(2 files have problems\)"):
        _check(task)


@pytest.mark.parametrize("declared, problem", [
    ({"timestamp_embedding_size": 4.0}, "timestamp_embedding_size 4.0, not a positive whole number"),
    ({"scene_embedding_size": None}, "scene_embedding_size None"),
    ({"scene_embedding_size": True}, "scene_embedding_size True"),
    ({"scene_embedding_size": 0}, "scene_embedding_size 0"),
])  # fmt: skip
def test_sizes_the_plugin_declares_must_be_whole_numbers(tmp_path, declared, problem):
    with pytest.raises(BadEmbeddings, match=problem):
        _check(_task(tmp_path, "scene", declared=declared))


def test_no_record_of_the_declared_sizes_is_refused(tmp_path):
    task = _task(tmp_path, "scene")
    (task.parents[1] / DECLARED_FILE).unlink()
    with pytest.raises(BadEmbeddings, match="no record of the sizes the plugin declares"):
        _check(task)
