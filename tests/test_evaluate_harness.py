"""`hear-matpac evaluate` as a benchmark harness (issue 16): model SPECs, stage keys, claims,
task-folder checks, never destroying what it did not make, strict summaries, exit status,
and a real SIGKILL of the whole process group followed by a resume."""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hear_matpac.cli import main
from hear_matpac import marks
from hear_matpac.evaluate import claims, run as pipeline, stages, tools
from hear_matpac.evaluate.specs import check_model, plan_stages, split_spec
from hear_matpac.evaluate.task_folders import find_tasks, parse_task_names
from hear_matpac.hear_tools.tasks import write_suite
from hear_matpac.weights.locate import TINY_UNTRAINED

from conftest import hear_matpac_cli, need, ok


def _listing(root: Path) -> list:
    return sorted((str(p.relative_to(root)), p.read_bytes() if p.is_file() else b"") for p in root.rglob("*"))


# --- model SPECs and stage keys -----------------------------------------------------------

def test_spec_splits_at_the_first_two_colons():
    assert split_spec("hearbaseline") == ("hearbaseline", "", "")
    assert split_spec('hear_matpac:w.pt:{"a": "x:y"}') == ("hear_matpac", "w.pt", '{"a": "x:y"}')
    assert split_spec("hear_matpac::{}") == ("hear_matpac", "", "{}")


def test_specs_differing_only_in_options_get_distinct_readable_folders(tmp_path):
    a = check_model(f"hear_matpac:{TINY_UNTRAINED}")
    b = check_model(f'hear_matpac:{TINY_UNTRAINED}:{{"layer": 1}}')
    assert a.folder != b.folder and a.key != b.key
    assert b.folder.startswith("hear_matpac-tiny_untrained-layer=1-")
    copy = tmp_path / "tiny_untrained.pt"  # same bytes elsewhere: same model; other bytes: another
    copy.write_bytes(Path(TINY_UNTRAINED).read_bytes())
    assert check_model(f"hear_matpac:{copy}").key == a.key
    copy.write_bytes(Path(TINY_UNTRAINED).read_bytes() + b"\0")
    assert check_model(f"hear_matpac:{copy}").key != a.key  # a changed file is another stage
    stages = plan_stages([a, b], [tmp_path / "t1", tmp_path / "t2"])
    assert [(s.model_folder, s.task) for s in stages] == [(a.folder, "t1"), (a.folder, "t2"), (b.folder, "t1"), (b.folder, "t2")]
    assert json.loads(json.dumps([s.as_dict() for s in stages]))[3]["options_json"] == '{"layer": 1}'


@pytest.mark.parametrize("spec, problem", [
    ("no_such_module_xyz", "not installed"), ("hear_matpac:weights/nope.pt", "nope.pt"),
    ("hear_matpac::[1]", "JSON object"), ('hear_matpac::{"layer": 99}', "layer"), ("1bad", "module name"),
])  # fmt: skip
def test_bad_specs_are_refused_in_one_line(spec, problem):
    with pytest.raises((ValueError, FileNotFoundError), match=problem):
        check_model(spec)


# --- claims ----------------------------------------------------------------------------------

def test_claims_are_exclusive_and_taken_over_only_from_dead_owners(tmp_path):
    claim = tmp_path / "task.claim"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        claim.write_text(json.dumps({"host": socket.gethostname(), "pid": live.pid}))
        assert not claims.take_claim(claim)  # a live owner keeps it
    finally:
        live.kill()
        live.wait()
    assert claims.take_claim(claim)  # its owner is gone now: taken over
    data = json.loads(claim.read_text())
    assert (data["host"], data["pid"]) == (socket.gethostname(), os.getpid()) and claims.holds_claim(claim)
    claims.release_claim(claim)
    assert not claim.exists()
    claim.write_text(json.dumps({"host": "another-node", "pid": 1}))
    assert not claims.take_claim(claim)  # another host's pid cannot be checked: left alone (within its lease)


# --- task folders and selection -------------------------------------------------------------

def test_one_task_selector_spelling():
    assert parse_task_names(["a,b", "c", "a", " "]) == ["a", "b", "c"]


def test_a_malformed_task_folder_is_one_line_naming_the_file(tmp_path):
    tasks = tmp_path / "tasks"
    write_suite(tasks, tasks=["synth_pitch_3fold", "synth_scene_multiclass"])
    assert [p.name for p in find_tasks(tasks, ["synth_pitch_3fold"])] == ["synth_pitch_3fold"]
    with pytest.raises(ValueError, match="no task nope"):
        find_tasks(tasks, ["nope"])
    (tasks / "synth_pitch_3fold" / "fold01.json").unlink()
    with pytest.raises(ValueError, match=r"synth_pitch_3fold/fold01\.json: missing"):
        find_tasks(tasks)
    find_tasks(tasks, ["synth_scene_multiclass"])  # only the chosen tasks are checked
    (tasks / "synth_scene_multiclass" / "task_metadata.json").write_text("{not json")
    with pytest.raises(ValueError, match="task_metadata.json: not readable JSON"):
        find_tasks(tasks, ["synth_scene_multiclass"])


def test_evaluate_refuses_a_malformed_task_folder_before_writing(tmp_path, capsys):
    tasks = tmp_path / "tasks"
    write_suite(tasks, tasks=["synth_scene_multiclass"])
    wav = next((tasks / "synth_scene_multiclass" / "16000" / "test").glob("*.wav"))
    wav.unlink()
    out = tmp_path / "out"
    argv = ["evaluate", "--out", str(out), "--tasks-dir", str(tasks), "--weights", str(TINY_UNTRAINED), "--no-chart"]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and wav.name in err[0] and "missing" in err[0]
    assert not out.exists()


# --- never destroy what it did not make -----------------------------------------------------

def _heareval_workspace(root: Path) -> list:
    """A user's heareval workspace: heareval's default ./tasks and ./embeddings, plus logs/."""
    write_suite(root / "tasks", tasks=["synth_scene_multiclass"])
    for marked in (root / "tasks").rglob(marks.MARK):
        marked.unlink()  # downloaded by the user, not made by hear-matpac
    (root / "embeddings" / "hearbaseline" / "task").mkdir(parents=True)
    (root / "embeddings" / "hearbaseline" / "task" / "test.embeddings.npy").write_bytes(b"computed for hours")
    (root / "logs").mkdir()
    (root / "logs" / "notes.txt").write_text("mine")
    return _listing(root)


def test_a_mistyped_weights_into_a_heareval_workspace_deletes_nothing(tmp_path, capsys):
    before = _heareval_workspace(tmp_path)
    for argv in (["--weights", str(tmp_path / "typo.pt")], ["--model", f"hear_matpac:{tmp_path / 'typo.pt'}"],
                 ["--weights", str(TINY_UNTRAINED), "--layer", "99"]):  # fmt: skip
        assert main(["evaluate", "--out", str(tmp_path), "--no-chart", *argv]) == 2
        assert len([line for line in capsys.readouterr().err.splitlines() if "error" in line]) == 1
        assert _listing(tmp_path) == before


def test_out_holding_a_users_tasks_folder_keeps_it(tmp_path, capsys):
    """The synthetic suite would go to OUT/tasks: a user's tasks/ there is refused, not replaced."""
    before = _heareval_workspace(tmp_path)
    for extra in ([], ["--overwrite"]):
        argv = ["evaluate", "--out", str(tmp_path), "--weights", str(TINY_UNTRAINED), "--no-chart", *extra]
        assert main(argv) == 2
        assert "not this run's synthetic suite" in capsys.readouterr().err
        assert _listing(tmp_path) == before


def test_runs_folder_not_made_by_hear_matpac_is_refused(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "mine.txt").write_text("x")
    model = check_model(f"hear_matpac:{TINY_UNTRAINED}")
    tasks = tmp_path / "t"
    write_suite(tasks, tasks=["synth_scene_multiclass"])
    with pytest.raises(ValueError, match="not made by hear-matpac"):
        pipeline.evaluate([model], tmp_path, tasks, report=lambda _: None)
    assert (tmp_path / "runs" / "mine.txt").read_text() == "x"


def test_tool_children_get_sigterm_when_the_run_dies(tmp_path):
    """`run_tool`'s children die with their parent, even when it is SIGKILLed."""
    pidfile = tmp_path / "child.pid"
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text(f"import os, pathlib, time\npathlib.Path({str(pidfile)!r}).write_text(str(os.getpid()))\ntime.sleep(60)\n")
    # run_tool runs `python -m hear_matpac.hear_tools ARGS`: the parent below makes it `python ARGS`
    code = "\n".join([
        f"import sys, pathlib, subprocess; sys.path.insert(0, {str(Path(__file__).parents[1])!r})",
        "from hear_matpac.evaluate import tools",
        "real = subprocess.Popen",
        "subprocess.Popen = lambda cmd, **kw: real([cmd[0], *cmd[3:]], **kw)",
        f"tools.Tools().run('sleep', [{str(sleeper)!r}], pathlib.Path({str(tmp_path / 'log')!r}))",
    ])  # fmt: skip
    parent = subprocess.Popen([sys.executable, "-c", code])
    for _ in range(200):
        if pidfile.is_file() and pidfile.read_text():
            break
        time.sleep(0.05)
    child = int(pidfile.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(200):
        if not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]:
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the tool's process outlived its parent")


def test_predictions_temp_folder_goes_on_sigterm(tmp_path):
    """`heareval predict` (temporary logs folder) stopped by SIGTERM leaves no folder behind."""
    need("heareval", "the HEAR tools")
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).parents[1])}
    code = ("import sys, time\nfrom hear_matpac.hear_tools import launch\n"
            "launch.link_task_dirs = lambda dirs, workdir: (print('ready', flush=True), time.sleep(60))[1] or []\n"
            "sys.exit(launch.run_predictions([str(%r)]))\n") % str(tmp_path)  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    assert list(tmp_path.glob("hear-matpac-predict-*"))
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == 128 + signal.SIGTERM
    assert not list(tmp_path.glob("hear-matpac-predict-*"))


# --- exit status and summaries --------------------------------------------------------------

def test_summary_is_strict_json_with_non_finite_scores_as_strings():
    from hear_matpac.reports.results import TaskScore

    scores = [TaskScore("m", Path("m"), "t", "d_prime", math.inf, None, 1, Path("x")),
              TaskScore("m", Path("m"), "u", "mAP", math.nan, -math.inf, 3, Path("y"))]  # fmt: skip
    text = json.dumps(pipeline.summary(pipeline.RunResult([], [], scores, Path("."))), allow_nan=False)
    data = json.loads(text)
    assert [(s["value"], s["std"]) for s in data["scores"]] == [("inf", None), ("nan", "-inf")]


def test_an_infinite_score_is_a_result_not_a_failure(tmp_path, monkeypatch, capsys):
    """heareval's d_prime is inf when a label separates perfectly: exit 0, strict summary."""
    task = tmp_path / "out" / "runs" / "m" / "t"
    task.mkdir(parents=True)
    (task / "task_metadata.json").write_text(json.dumps({"task_name": "t", "evaluation": ["d_prime"], "splits": ["test"]}))
    (task / "test.predicted-scores.json").write_text(json.dumps({"test": {"test_score": math.inf, "test_d_prime": math.inf}}))
    from hear_matpac.reports.results import read_scores

    scores = read_scores(task)
    assert scores[0].value == math.inf
    monkeypatch.setattr("hear_matpac.cli.evaluate.evaluate",
                        lambda *a, **k: pipeline.RunResult([], [stages.Outcome("m", "t", "ran")], scores, task))
    assert main(["evaluate", "--out", str(tmp_path / "out"), "--weights", str(TINY_UNTRAINED), "--no-chart"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["scores"][0]["value"] == "inf"


# --- real runs (heareval) ---------------------------------------------------------------------

def _scores(out: Path) -> list:
    return sorted((s["model"], s["task"], s["metric"], s["value"]) for s in json.loads((out / "summary.json").read_text())["scores"])


def _wait_until(seen, victim: subprocess.Popen, limit_s: float = 600.0) -> None:
    """Poll `seen()` while `victim` runs; it must not end first (a hang guard, not a timing check)."""
    deadline = time.monotonic() + limit_s
    while not seen():
        assert victim.poll() is None, f"the run ended (exit {victim.returncode}) before the point"
        assert time.monotonic() < deadline, "the point was never reached"
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_of_the_process_group_then_resume_gives_the_same_scores(tmp_path):
    need("heareval", "the HEAR tools")
    need("pytorch_lightning", "heareval's predictions runner")
    args = ["--tasks", "synth_scene_multiclass,synth_scene_multilabel", "--grid-points", "1", "--no-chart",
            "--tensorflow", "stand-in", "--model", f"hear_matpac:{TINY_UNTRAINED}",
            "--model", f'hear_matpac:{TINY_UNTRAINED}:{{"layer": 1}}', "--model", "json"]  # fmt: skip
    whole = hear_matpac_cli("evaluate", "--out", str(tmp_path / "whole"), *args, cwd=tmp_path)
    # `json` is installed but no HEAR module: reported with its log, skipped, the others go on
    assert whole.returncode == 1, whole.stderr
    failed = [line for line in whole.stderr.splitlines() if "failed" in line]
    assert len(failed) == 1 and "json-" in failed[0] and "validate." in failed[0] and ".log" in failed[0]
    assert len({(m, t) for m, t, _, _ in _scores(tmp_path / "whole")}) == 4  # 2 models x 2 tasks
    command = [sys.executable, "-m", "hear_matpac.cli", "evaluate", "--out", str(tmp_path / "killed"), *args]
    victim = subprocess.Popen(command, cwd=tmp_path, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    runs = tmp_path / "killed" / "runs"
    try:  # killed at a point inside the run: one stage complete, the next one started
        _wait_until(lambda: any(runs.glob("*/*/stage.json")) and any(runs.glob("*/.work-*/embed.log")), victim)
        os.killpg(victim.pid, signal.SIGKILL)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
    again = hear_matpac_cli("evaluate", "--out", str(tmp_path / "killed"), *args, cwd=tmp_path)
    assert again.returncode == 1 and len([line for line in again.stderr.splitlines() if "failed" in line]) == 1
    assert 1 <= again.stdout.count("complete; skipped") < 4, again.stdout  # resumed: kept the done, redid the rest
    assert _scores(tmp_path / "killed") == _scores(tmp_path / "whole")
    third = ok(hear_matpac_cli("evaluate", "--out", str(tmp_path / "killed"), *args[:-2], cwd=tmp_path))
    assert third.stdout.count("complete; skipped") == 4 and "stages: 4 skipped; hear-validator: 2 skipped" in third.stdout
    leftovers = [p for p in (tmp_path / "killed" / "runs").rglob("*") if p.name.startswith(".work-") or p.suffix == ".claim"]
    assert leftovers == []
    assert (tmp_path / "killed" / "comparison.md").read_text().count("| synth_scene_") == 2


def test_a_models_file_lists_specs_one_a_line(tmp_path):
    from hear_matpac.evaluate.specs import read_spec_file

    listing = tmp_path / "models.txt"
    listing.write_text('# my comparison\nhear_matpac\n\n  hear_matpac::{"layer": 1}  \nhearbaseline\n')
    assert read_spec_file(listing) == ["hear_matpac", 'hear_matpac::{"layer": 1}', "hearbaseline"]
    with pytest.raises(FileNotFoundError, match="--models-file"):
        read_spec_file(tmp_path / "absent.txt")


# --- one key scheme --------------------------------------------------------------------------

def test_equal_meaning_options_are_one_model_key_and_folder():
    """`{"layer": -1}` is the tiny model's last layer, its default; `max_windows` changes no
    number: one key (and one folder) for all of them."""
    plain = check_model(f"hear_matpac:{TINY_UNTRAINED}")
    for options in ('{"layer": -1}', '{"max_windows": 3}', '{"layer": 2, "max_windows": 7}'):
        same = check_model(f"hear_matpac:{TINY_UNTRAINED}:{options}")
        assert (same.key, same.folder) == (plain.key, plain.folder), options
    assert check_model(f'hear_matpac:{TINY_UNTRAINED}:{{"layer": 0}}').key != plain.key


def test_a_changed_weight_byte_or_interpreter_is_another_model_key(tmp_path):
    import torch

    from hear_matpac.evaluate.specs import model_key
    from hear_matpac.hear_tools.environments import Environment

    state = torch.load(TINY_UNTRAINED, weights_only=True, map_location="cpu")
    name = next(k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point())
    torch.save(state, tmp_path / "a.pt")
    state[name].view(-1)[0] += 1.0
    torch.save(state, tmp_path / "b.pt")
    a, b = check_model(f"hear_matpac:{tmp_path / 'a.pt'}"), check_model(f"hear_matpac:{tmp_path / 'b.pt'}")
    assert a.key != b.key and a.weights_sha256 != b.weights_sha256
    here = Environment("/envs/a/bin/python", "3.11.7", {"numpy": "1.26.4"})
    keys = {model_key("plug", "", {}, env) for env in (None, here, Environment("/envs/b/bin/python", "3.11.7", here.packages),
                                                       Environment(here.python, "3.12.1", here.packages),
                                                       Environment(here.python, here.version, {"numpy": "2.0.0"}))}
    assert len(keys) == 5
    assert model_key("plug", "", {"b": 1, "a": 2}) == model_key("plug", "", {"a": 2, "b": 1})  # a foreign module's options, sorted
