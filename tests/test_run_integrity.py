"""Nothing lost, nothing passed off (issue 27, items 1, 3, 4 and 7): `sweep` and `evaluate`
remove only what that tool made for that purpose; a changed task folder is run again; the
comparison table holds this run's complete stages and nothing else; a stage left to another
run's claim is not an exit 0.

Real `hear-matpac` command lines (in this process, `cli.main`, or as a process where one is
killed) with the bundled tiny checkpoint and small synthetic task folders; the HEAR tools are
the stand-ins of `standin_tools.py` (what they compute is not what is tested here)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import standin_tools
from hear_matpac.cli import main
from hear_matpac import marks
from hear_matpac.evaluate import claims, stages, tools
from hear_matpac.evaluate.specs import check_model
from hear_matpac.hear_tools.tasks import write_suite
from hear_matpac.weights.locate import TINY_UNTRAINED

REPO = Path(__file__).resolve().parents[1]
SCENE, PITCH, LABELS = "synth_scene_multiclass", "synth_pitch_3fold", "synth_scene_multilabel"
LEGACY = "made by hear-matpac; safe for hear-matpac to remove\n"  # the mark of versions before 27


@pytest.fixture(autouse=True)
def standin(monkeypatch):
    monkeypatch.setattr(tools.Tools, "run", standin_tools.tool_method)
    monkeypatch.setattr(stages, "check_task_embeddings", standin_tools.check_task_embeddings)


def _model(options: str = ""):
    return check_model(f"hear_matpac:{TINY_UNTRAINED}:{options}")


def _sweep_stage(out: Path, seconds: float, task: str) -> Path:
    """Where `sweep` puts the stage of one window length and task: evaluate's layout in OUT/sweep."""
    return out / "sweep" / "runs" / _model(json.dumps({"window_seconds": seconds})).folder / task


def _evaluate(out: Path, *argv: str) -> int:
    return main(["evaluate", "--out", str(out), "--weights", str(TINY_UNTRAINED), "--no-chart",
                 "--tensorflow", "stand-in", "--grid-points", "1", *argv])  # fmt: skip


def _sweep(out: Path, *argv: str) -> int:
    return main(["sweep", "--out", str(out), "--weights", str(TINY_UNTRAINED), "--no-chart",
                 "--tensorflow", "stand-in", "--grid-points", "1", "--window-seconds", "0.96", *argv])  # fmt: skip


def _listing(root: Path) -> list:
    """Every path under `root` with its bytes and modification time: equal means untouched."""
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
                  for p in root.rglob("*"))  # fmt: skip


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _statuses(out: Path) -> list:
    return [(s["task"], s["status"]) for s in _summary(out)["stages"] if "task" in s]


def _table(out: Path) -> list:
    """comparison.csv as (task, {model column: value})."""
    with open(out / "comparison.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [(r["task"], {k: r[k] for k in r if k not in ("task", "metric", "higher_is_better", "best")
                         and not k.endswith(" std")}) for r in rows]  # fmt: skip


def _mark(folder: Path, tool: str, purpose: str) -> Path:
    """`folder` made (if missing) and marked as `tool`'s, for `purpose`: the mark's format as
    docs/evaluate.md states it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / marks.MARK).write_text(json.dumps({"made_by": "hear-matpac", "tool": tool, "purpose": purpose}))
    return folder


def _one_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


# --- item 1: sweep removes nothing of evaluate's (issue 26: nor of its own earlier runs) ------

def test_sweep_into_an_evaluate_out_leaves_its_runs_and_tasks(tmp_path):
    tasks = tmp_path / "T1"
    write_suite(tasks, tasks=[SCENE])
    out = tmp_path / "R"
    assert _evaluate(out, "--tasks-dir", str(tasks)) == 0
    runs = _listing(out / "runs")
    stage = out / "runs" / _model().folder / SCENE
    assert (stage / "stage.json").is_file()
    assert _sweep(out, "--tasks-dir", str(tasks)) == 0
    assert _listing(out / "runs") == runs  # every finished stage and the validation are still there
    assert (_sweep_stage(out, 0.96, SCENE) / "embed.log").is_file() and (out / "sweep.md").is_file()
    # summary.json and the table still describe results that exist
    assert all(Path(s["log"]).parent == stage for s in _summary(out)["stages"] if s.get("task") == SCENE)


def test_sweep_without_tasks_dir_leaves_evaluate_s_synthetic_suite(tmp_path):
    out = tmp_path / "R"
    assert _evaluate(out, "--tasks", SCENE) == 0
    suite, runs = _listing(out / "tasks"), _listing(out / "runs")
    assert _sweep(out, "--tasks", LABELS) == 0  # another task selection: its own suite, not OUT/tasks
    assert _listing(out / "tasks") == suite and _listing(out / "runs") == runs
    # its own copy of the whole suite (issue 26: every later selection reuses it); only LABELS ran
    assert LABELS in [p.name for p in (out / "sweep" / "tasks").iterdir()]
    assert [p.name for p in _sweep_stage(out, 0.96, LABELS).parent.iterdir() if p.is_dir()] == [LABELS]
    assert _evaluate(out, "--tasks", SCENE) == 0  # evaluate's stage is still complete
    assert _statuses(out) == [(SCENE, "skipped")]


def test_sweep_keeps_its_own_earlier_results_and_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    """Issue 26 changed the first half: sweep no longer replaces its earlier results, it
    reuses them (tests/test_sweep_resume.py)."""
    tasks = tmp_path / "T1"
    write_suite(tasks, tasks=[SCENE])
    out = tmp_path / "R"
    assert _sweep(out, "--tasks-dir", str(tasks), "--window-seconds", "0.96,6.08") == 0
    assert _sweep(out, "--tasks-dir", str(tasks)) == 0  # a shorter list: the other length's results stay
    assert (_sweep_stage(out, 0.96, SCENE) / "stage.json").is_file()
    assert (_sweep_stage(out, 6.08, SCENE) / "stage.json").is_file()
    capsys.readouterr()
    # a sweep/ made by anyone else (a user, an older hear-matpac, evaluate) is refused, untouched
    for n, mark in enumerate((None, LEGACY, ("evaluate", "runs"))):
        other = tmp_path / f"other-{n}"
        (other / "sweep").mkdir(parents=True)
        (other / "sweep" / "notes.txt").write_text("mine")
        if mark == LEGACY:
            (other / "sweep" / marks.MARK).write_text(LEGACY)
        elif mark:
            _mark(other / "sweep", *mark)
        before = _listing(other)
        assert _sweep(other, "--tasks-dir", str(tasks)) == 2
        error = _one_error(capsys)
        assert error.startswith("hear-matpac sweep: error: ") and "sweep" in error and "left alone" in error
        assert _listing(other) == before


def test_a_tasks_dir_inside_sweep_s_own_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "R"
    assert _sweep(out, "--tasks", SCENE) == 0
    before = _listing(out / "sweep")
    capsys.readouterr()
    assert _sweep(out, "--tasks-dir", str(out / "sweep" / "tasks")) == 2
    assert "lies inside" in _one_error(capsys)
    assert _listing(out / "sweep") == before


@pytest.mark.parametrize("where", ["work", "stage"])
def test_evaluate_removes_no_folder_another_tool_made_where_a_stage_goes(tmp_path, capsys, where):
    """A `.work-<task>.*` or `<task>` folder in a model folder is removed only when evaluate
    made it for that (or an older hear-matpac did, which wrote only evaluate's folders there)."""
    tasks = tmp_path / "T1"
    write_suite(tasks, tasks=[SCENE])
    out = tmp_path / "R"
    assert _evaluate(out, "--tasks-dir", str(tasks)) == 0
    folder = out / "runs" / _model().folder
    name = f".work-{SCENE}.0123456789ab" if where == "work" else SCENE
    if where == "stage":
        os.rename(folder / SCENE, tmp_path / "kept")
    _mark(folder / name, "sweep", "results")
    (folder / name / "mine.txt").write_text("keep me")
    before = _listing(folder / name)
    capsys.readouterr()
    assert _evaluate(out, "--tasks-dir", str(tasks), "--overwrite") == 2
    error = _one_error(capsys)
    assert name in error and "hear-matpac sweep" in error and "move it" in error
    assert _listing(folder / name) == before and not list(folder.glob("*.claim"))
    # its own earlier folders, and those of older versions, it does remove
    (folder / name / marks.MARK).write_text(LEGACY)
    assert _evaluate(out, "--tasks-dir", str(tasks), "--overwrite") == 0
    assert not (folder / name / "mine.txt").exists() and _statuses(out) == [(SCENE, "ran")]


def test_evaluate_refuses_a_runs_folder_another_tool_made(tmp_path, capsys):
    tasks = tmp_path / "T1"
    write_suite(tasks, tasks=[SCENE])
    out = tmp_path / "R"
    _mark(out / "runs", "sweep", "results")
    before = _listing(out)
    assert _evaluate(out, "--tasks-dir", str(tasks)) == 2
    assert "not by evaluate" in _one_error(capsys)
    assert _listing(out) == before
    (out / "runs" / marks.MARK).write_text(LEGACY)  # an older hear-matpac's runs/: used, as before
    assert _evaluate(out, "--tasks-dir", str(tasks)) == 0
    assert _statuses(out) == [(SCENE, "ran")]


# --- item 3: a changed task folder is run again -----------------------------------------------

def _score(out: Path) -> float:
    [score] = {s["value"] for s in _summary(out)["scores"] if s["task"] == SCENE}  # the stand-in: one value per task
    return score


def test_another_task_folder_of_the_same_name_is_run_again(tmp_path):
    t1, t2, out = tmp_path / "T1", tmp_path / "T2", tmp_path / "R"
    write_suite(t1, tasks=[SCENE])
    assert main(["make-tasks", str(t2), "--seed", "7", "--scale", "2", "--tasks", SCENE]) == 0
    assert _evaluate(out, "--tasks-dir", str(t1)) == 0
    assert _score(out) == standin_tools.task_score(t1 / SCENE, {})
    assert _evaluate(out, "--tasks-dir", str(t2)) == 0
    assert _statuses(out) == [(SCENE, "ran")]  # not "complete; skipped" with T1's score
    assert _score(out) == standin_tools.task_score(t2 / SCENE, {}) != standin_tools.task_score(t1 / SCENE, {})
    record = json.loads((out / "runs" / _model().folder / SCENE / "stage.json").read_text())
    assert record["task_dir"] == str((t2 / SCENE).resolve()) and len(record["task_fingerprint"]) == 64
    assert _evaluate(out, "--tasks-dir", str(t2)) == 0
    assert _statuses(out) == [(SCENE, "skipped")]  # unchanged: still reused


def test_a_task_folder_edited_in_place_is_run_again(tmp_path):
    tasks, out = tmp_path / "T1", tmp_path / "R"
    write_suite(tasks, tasks=[SCENE])
    assert _evaluate(out, "--tasks-dir", str(tasks)) == 0
    # one test clip dropped: its label and its audio
    labels_file = tasks / SCENE / "test.json"
    labels = json.loads(labels_file.read_text())
    dropped = sorted(labels)[0]
    del labels[dropped]
    labels_file.write_text(json.dumps(labels))
    (tasks / SCENE / "16000" / "test" / dropped).unlink()
    assert _evaluate(out, "--tasks-dir", str(tasks)) == 0
    assert _statuses(out) == [(SCENE, "ran")]
    assert _score(out) == standin_tools.task_score(tasks / SCENE, {})
    # one clip's audio rewritten (same name, same size: only its time says so)
    wav = sorted((tasks / SCENE / "16000" / "train").glob("*.wav"))[0]
    later = wav.stat().st_mtime_ns + 5_000_000_000
    os.utime(wav, ns=(later, later))
    assert _evaluate(out, "--tasks-dir", str(tasks)) == 0
    assert _statuses(out) == [(SCENE, "ran")]
    assert _evaluate(out, "--tasks-dir", str(tasks)) == 0
    assert _statuses(out) == [(SCENE, "skipped")]


# --- item 4: the table holds this run's complete stages and nothing else ----------------------

def _killed_in_predict(out: Path, tasks: Path, task: str, tmp_path: Path) -> None:
    """`evaluate` as a process, SIGKILLed after its predictions runner wrote the scores but
    before the stage was put in place: a `.work-*` folder with scores is left behind."""
    ready = tmp_path / "ready"
    code = ("import sys; import standin_tools; standin_tools.install(); from hear_matpac.cli import main; "
            "sys.exit(main(sys.argv[1:]))")  # fmt: skip
    argv = ["evaluate", "--out", str(out), "--weights", str(TINY_UNTRAINED), "--no-chart", "--tensorflow",
            "stand-in", "--grid-points", "1", "--tasks-dir", str(tasks), "--tasks", task]  # fmt: skip
    env = {**os.environ, standin_tools.HANG_ENV: str(ready),
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])}  # fmt: skip
    victim = subprocess.Popen([sys.executable, "-c", code, *argv], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(1200):
            if ready.is_file():
                break
            assert victim.poll() is None, "the run ended before its predictions"
            time.sleep(0.05)
        else:
            pytest.fail("the run never reached its predictions")
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()


def test_the_table_shows_only_this_run_s_complete_stages(tmp_path):
    tasks, out = tmp_path / "T", tmp_path / "R"
    write_suite(tasks, tasks=[SCENE, PITCH, LABELS])
    model = _model()
    assert _evaluate(out, "--tasks-dir", str(tasks), "--tasks", SCENE) == 0  # an earlier run's task and grid
    _killed_in_predict(out, tasks, PITCH, tmp_path)
    left = list((out / "runs" / model.folder).glob(f".work-{PITCH}.*/embeddings/*/{PITCH}/test.predicted-scores.json"))
    assert left, "the killed run left no scores behind"
    assert _evaluate(out, "--tasks-dir", str(tasks), "--tasks", LABELS, "--grid-points", "2") == 0
    expected = standin_tools.task_score(tasks / LABELS, {})
    assert _table(out) == [(LABELS, {model.folder: repr(expected)})]
    rows = [line for line in (out / "comparison.md").read_text().splitlines() if line.startswith("| synth_")]
    assert len(rows) == 1 and rows[0].startswith(f"| {LABELS} |")
    assert {(s["task"], s["value"]) for s in _summary(out)["scores"]} == {(LABELS, expected)}


def test_a_run_with_no_complete_stage_leaves_no_earlier_table(tmp_path):
    tasks, out = tmp_path / "T", tmp_path / "R"
    write_suite(tasks, tasks=[SCENE])
    assert _evaluate(out, "--tasks-dir", str(tasks)) == 0
    assert "| synth_scene_multiclass |" in (out / "comparison.md").read_text()
    claim = out / "runs" / _model().folder / f"{SCENE}.claim"
    holder = _holder(claim)
    try:
        assert _evaluate(out, "--tasks-dir", str(tasks), "--overwrite") == 1
    finally:
        _release(holder)
    assert "no scores" in (out / "comparison.md").read_text() and _table(out) == []


# --- item 7: a stage left to another run is not an exit 0 -------------------------------------

HOLDER = """
import pathlib, sys
from hear_matpac.evaluate import claims
claim = pathlib.Path(sys.argv[1])
assert claims.take_claim(claim)
print("held", flush=True)
sys.stdin.readline()
claims.release_claim(claim)
"""


def _holder(claim: Path) -> subprocess.Popen:
    """Another live process holding `claim`, until `_release`."""
    claim.parent.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(claim)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert child.stdout.readline().strip() == "held"
    return child


def _release(child: subprocess.Popen) -> None:
    child.stdin.write("\n")
    child.stdin.close()
    assert child.wait(timeout=60) == 0


def test_a_stage_claimed_by_another_live_run_is_exit_1_naming_it(tmp_path, capsys):
    tasks, out = tmp_path / "T", tmp_path / "R"
    write_suite(tasks, tasks=[SCENE, PITCH])
    model = _model()
    assert _evaluate(out, "--tasks-dir", str(tasks), "--tasks", SCENE) == 0
    holder = _holder(out / "runs" / model.folder / f"{PITCH}.claim")
    capsys.readouterr()
    try:
        assert _evaluate(out, "--tasks-dir", str(tasks)) == 1
    finally:
        _release(holder)
    captured = capsys.readouterr()
    assert "stages: 1 skipped, 1 claimed; hear-validator: 1 skipped" in captured.out
    [line] = [line for line in captured.err.splitlines() if "left undone" in line]
    assert f"{model.folder} / {PITCH}" in line and f"pid {holder.pid}" in line
    assert _statuses(out) == [(PITCH, "claimed"), (SCENE, "skipped")]
    assert {s["task"] for s in _summary(out)["scores"]} == {SCENE}  # no score for the claimed stage
    assert [task for task, _ in _table(out)] == [SCENE]
    assert _evaluate(out, "--tasks-dir", str(tasks)) == 0  # the holder gone: the stage runs
    assert sorted(_statuses(out)) == [(PITCH, "ran"), (SCENE, "skipped")]
