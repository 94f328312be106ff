"""Many nodes (issue 17): `evaluate --engine slurm` through submitit, and the claims that make
resuming on a shared file system safe across hosts: leases refreshed by a heartbeat, taken over
when stale from any host, and a stage whose claim was taken over never put in place.

The end-to-end tests run the very same jobs with submitit's local executor
(`--slurm-cluster local`) and compare with a plain local run."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hear_matpac.cli import main
from hear_matpac import marks
from hear_matpac.evaluate import claims, run as pipeline, stages, tools
from hear_matpac.evaluate.engines import slurm
from hear_matpac.evaluate.specs import check_model, plan_stages
from hear_matpac.evaluate.engines.slurm import SlurmOptions, make_executor, parse_extra, run_stages_submitit
from hear_matpac.hear_tools.tasks import write_suite
from hear_matpac.weights.locate import TINY_UNTRAINED

from conftest import need

REPO = Path(__file__).resolve().parents[1]


def _claim_file(claim: Path, host: str, pid: int = 1, job: str = "") -> None:
    claim.write_text(json.dumps({"host": host, "pid": pid, "token": "f" * 32, "job": job}))


# --- leases ------------------------------------------------------------------------------------

def test_a_stale_lease_from_another_host_is_taken_over_and_a_fresh_one_respected(tmp_path, monkeypatch):
    claim = tmp_path / "task.claim"
    _claim_file(claim, "node-that-died")
    refreshed = claim.stat().st_mtime
    monkeypatch.setattr(claims, "clock", lambda: refreshed + claims.LEASE_S - 1)
    assert not claims.take_claim(claim)  # refreshed within the lease: its owner is alive somewhere
    assert json.loads(claim.read_text())["host"] == "node-that-died"
    monkeypatch.setattr(claims, "clock", lambda: refreshed + claims.LEASE_S + 1)
    assert claims.take_claim(claim)  # not refreshed for longer than the lease: stale, taken over
    data = json.loads(claim.read_text())
    assert (data["host"], data["pid"]) == (socket.gethostname(), os.getpid()) and claims.holds_claim(claim)
    claims.release_claim(claim)
    assert not claim.exists()


def test_a_retry_of_the_same_job_takes_over_its_predecessors_claim(tmp_path, monkeypatch):
    claim = tmp_path / "task.claim"
    monkeypatch.setenv(claims.JOB_ENV, "run-7-3")
    _claim_file(claim, "node-a", job="run-7-9")  # another stage's job, fresh: left alone
    assert not claims.take_claim(claim)
    _claim_file(claim, "node-a", job="run-7-3")  # this stage's job, which ended: taken over at once
    assert claims.take_claim(claim)
    assert json.loads(claim.read_text())["job"] == "run-7-3"
    claims.release_claim(claim)


HOLDER = """
import sys, time, pathlib
sys.path.insert(0, {repo!r})
from hear_matpac.evaluate import claims
claim = pathlib.Path({claim!r})
assert claims.take_claim(claim, lease_s={lease})
print("held", flush=True)
sys.stdin.readline()  # the test lets it go on
print("still" if claims.holds_claim(claim) else "lost", flush=True)
claims.release_claim(claim)
"""


def _holder(claim: Path, lease: float) -> subprocess.Popen:
    code = HOLDER.format(repo=str(REPO), claim=str(claim), lease=lease)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def _refreshed_after(claim: Path, then: float) -> float:
    """Wait until `claim`'s modification time is later than `then` (its holder's heartbeat
    refreshed it; a slow heartbeat only makes this wait longer); that time."""
    deadline = time.monotonic() + 300
    while claim.stat().st_mtime <= then:
        assert time.monotonic() < deadline, "the heartbeat never refreshed the claim"
        time.sleep(0.02)
    return claim.stat().st_mtime


def test_the_heartbeat_keeps_a_live_claim_and_a_stalled_holder_loses_it(tmp_path, monkeypatch):
    """Another process's claim is refreshed by its heartbeat (an mtime set far back comes
    forward again) and, within its lease by the injected clock, is respected; stopped (SIGSTOP:
    a suspended job, a hung node) past its lease, another takes the stage, and the holder,
    woken, sees it no longer holds the claim. No step depends on how fast the heartbeat runs."""
    claim, lease = tmp_path / "task.claim", 0.5  # the holder refreshes every lease / 4
    child = _holder(claim, lease)
    try:
        os.utime(claim, (1000.0, 1000.0))
        refreshed = _refreshed_after(claim, 1000.0)
        monkeypatch.setattr(claims, "clock", lambda: refreshed + lease / 2)
        assert not claims.take_claim(claim, lease_s=lease)  # alive and refreshed within the lease
        os.kill(child.pid, signal.SIGSTOP)
        monkeypatch.setattr(claims, "clock", lambda: claim.stat().st_mtime + 2 * lease)  # not refreshed since
        assert claims.take_claim(claim, lease_s=lease)  # same host, pid alive, but the lease ran out
        os.kill(child.pid, signal.SIGCONT)
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "lost"
        assert child.wait(timeout=30) == 0
        assert claims.holds_claim(claim)  # its release left the new holder's claim alone
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
        claims.release_claim(claim)


# --- a stage whose claim was taken over is never put in place -----------------------------------

def _fake_tools(monkeypatch, during_predict=lambda work: None) -> None:
    """embed/predict stand-ins writing a task folder with scores, in this process (no
    embeddings in it: the embedding check is stood in for too)."""
    def embed(self, weights, tasks_dir, embeddings_dir, options, tensorflow, log, module, env=None, python=""):
        log.write_text("embedded\n")
        result = Path(embeddings_dir) / "model" / next(Path(tasks_dir).iterdir()).name
        result.mkdir(parents=True)
        (result / "test.predicted-scores.json").write_text(json.dumps({"test": {"test_score": 0.5}}))
        return tools.Stage("embed", 0.0), [result]

    def predict(self, task_dirs, grid, grid_points, log, logs_dir=None, env=None):
        log.write_text("predicted\n")
        during_predict(log.parent)
        return tools.Stage("predict", 0.0)

    monkeypatch.setattr(tools.Tools, "embed", embed)
    monkeypatch.setattr(stages, "check_task_embeddings", lambda task_dir, declared: None)
    monkeypatch.setattr(tools.Tools, "predict", predict)


def _one_plan(tmp_path: Path):
    tasks = tmp_path / "tasks"
    write_suite(tasks, tasks=["synth_scene_multiclass"])
    plan = plan_stages([check_model(f"hear_matpac:{TINY_UNTRAINED}")], [tasks / "synth_scene_multiclass"])[0]
    runs = tmp_path / "runs"
    (runs / plan.model_folder).mkdir(parents=True)
    return plan, runs


def _run(plan, runs, overwrite=False):
    return stages.run_stage(plan, runs, "faster", 1, "stand-in", False, overwrite, lambda _: None, "[1/1]")


@pytest.mark.parametrize("new_holder_finished", [False, True])
def test_a_stage_whose_claim_was_taken_over_does_not_overwrite_or_count(tmp_path, monkeypatch, new_holder_finished):
    plan, runs = _one_plan(tmp_path)
    final = runs / plan.model_folder / plan.task
    claim = runs / plan.model_folder / f"{plan.task}.claim"

    def taken_over(work):  # meanwhile the lease ran out and another host took the stage
        _claim_file(claim, "node-b", pid=4242)
        if new_holder_finished:
            final.mkdir()
            (final / "stage.json").write_text(json.dumps({"model_key": plan.model_key, "grid": "faster:1"}))
            (final / "test.predicted-scores.json").write_text(json.dumps({"test": {"test_score": 0.9}}))
            (final / marks.MARK).write_text("")

    _fake_tools(monkeypatch, taken_over)
    outcome = _run(plan, runs, overwrite=new_holder_finished)  # even --overwrite leaves the new holder's result
    assert outcome.status == "claimed" and "taken over" in outcome.message
    assert json.loads(claim.read_text())["host"] == "node-b"  # its claim is not released by the loser
    assert not list((runs / plan.model_folder).glob(".work-*"))  # its own work is gone
    if new_holder_finished:
        assert json.loads((final / "test.predicted-scores.json").read_text())["test"]["test_score"] == 0.9
    else:
        assert not final.exists()


def test_a_stage_that_keeps_its_claim_is_put_in_place_once(tmp_path, monkeypatch):
    """The same fake stage, not taken over: in place, its work folder and claim gone."""
    plan, runs = _one_plan(tmp_path)
    final = runs / plan.model_folder / plan.task
    stale = runs / plan.model_folder / f".work-{plan.task}.0123456789ab"  # a dead holder's work folder
    marks.make_marked(stale, "evaluate", "stage work")
    _fake_tools(monkeypatch)
    assert _run(plan, runs).status == "ran"
    assert stages.stage_done(final, plan, "faster:1")
    assert sorted(p.name for p in (runs / plan.model_folder).iterdir()) == [plan.task]
    assert _run(plan, runs).status == "skipped"


# --- the engine's options and errors ---------------------------------------------------------

def _stand_in_slurm(tmp_path: Path, monkeypatch) -> None:
    """`srun` and `sbatch` on PATH; this `sbatch` refuses the partition, as Slurm's does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed: "
                                    "Invalid partition name specified' >&2\nexit 1\n")  # fmt: skip
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_each_stage_job_asks_slurm_for_one_gpu(tmp_path, monkeypatch):
    """The sbatch script submitit writes for a stage, on a machine with a stand-in Slurm."""
    need("submitit", "the Slurm engine")
    _stand_in_slurm(tmp_path, monkeypatch)
    options = SlurmOptions(partition="gpu", extra=parse_extra(["mem_gb=64", "slurm_account=lab"]))
    executor = make_executor(options, tmp_path / "slurm")
    script = executor._executor._make_submission_file_text("python -m job", "uid")
    for line in ("--gpus-per-node=1", "--ntasks-per-node=1", "--nodes=1", "--cpus-per-task=8", "--time=240",
                 "--partition=gpu", "--mem=64GB", "--account=lab", "--job-name=hear-matpac"):  # fmt: skip
        assert f"#SBATCH {line}\n" in script, line
    with pytest.raises(ValueError, match="submitit refused"):
        make_executor(SlurmOptions(extra={"no_such_thing": 1}), tmp_path / "slurm")


def test_slurm_refusing_the_jobs_is_one_line(tmp_path, monkeypatch):
    need("submitit", "the Slurm engine")
    _stand_in_slurm(tmp_path, monkeypatch)
    plan, runs = _one_plan(tmp_path)
    with pytest.raises(ValueError, match="submitting the stages failed: .*Invalid partition name") as err:
        run_stages_submitit([plan], {"runs": runs}, SlurmOptions(partition="nope"), tmp_path / "slurm")
    assert "\n" not in str(err.value)


def _evaluate_argv(out: Path, *extra: str) -> list:
    return ["evaluate", "--out", str(out), "--weights", str(TINY_UNTRAINED), "--no-chart", *extra]


def test_engine_slurm_without_submitit_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    assert main(_evaluate_argv(tmp_path / "out", "--engine", "slurm", "--slurm-cluster", "local")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "submitit" in err[0] and "pip install 'hear-matpac[slurm]'" in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, problem", [
    (["--slurm-partition", "gpu"], "need --engine slurm"),
    (["--engine", "slurm", "--slurm-cluster", "local", "--slurm-gpus-per-stage", "-1"], "--slurm-gpus-per-stage"),
    (["--engine", "slurm", "--slurm-cluster", "local", "--slurm-extra", "mem_gb"], "KEY=VALUE"),
    (["--engine", "slurm", "--slurm-cluster", "local", "--jobs", "2"], "drop them"),
    (["--engine", "slurm", "--slurm-cluster", "local", "--devices", "cpu"], "drop them"),
])  # fmt: skip
def test_engine_option_mistakes_are_one_line(tmp_path, capsys, argv, problem):
    assert main(_evaluate_argv(tmp_path / "out", *argv)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and problem in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_parameter_submitit_refuses_is_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch):
    """`--slurm-extra foo=1` is refused with the other checks: no validation, nothing under --out."""
    need("submitit", "the Slurm engine")
    started: list = []

    def no_tool(self, name, *args, **kwargs):  # hear-validator and the runners: none may start
        started.append(name)
        raise tools.StageFailed(f"{name} started")

    monkeypatch.setattr(tools.Tools, "run", no_tool)
    out = tmp_path / "out"
    assert main(_evaluate_argv(out, "--engine", "slurm", "--slurm-cluster", "local", "--slurm-extra", "foo=1")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "submitit refused the parameters" in err[0] and "foo" in err[0], err
    assert started == [] and not out.exists()


def test_engine_slurm_off_a_slurm_machine_says_where_to_run(tmp_path, capsys, monkeypatch):
    need("submitit", "the Slurm engine")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    assert main(_evaluate_argv(tmp_path / "out", "--engine", "slurm", "--slurm-partition", "gpu")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "Slurm login node" in err[0] and "--slurm-cluster local" in err[0], err
    assert not (tmp_path / "out").exists()


# --- end to end, with submitit's local executor -----------------------------------------------

TASKS = ["synth_scene_multiclass", "synth_scene_multilabel"]


def _scores(result: pipeline.RunResult) -> list:
    return sorted((s.model, s.task, s.metric, s.value, s.std) for s in result.scores)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """Two stages run in this process (the default engine): the expected scores."""
    need("heareval", "the HEAR tools")
    need("pytorch_lightning", "heareval's predictions runner")
    need("submitit", "the Slurm engine")
    root = tmp_path_factory.mktemp("plain")
    write_suite(root / "tasks", tasks=TASKS)
    model = check_model(f"hear_matpac:{TINY_UNTRAINED}")
    result = pipeline.evaluate([model], root / "out", root / "tasks", grid_points=1, tensorflow="stand-in",
                               report=lambda _: None)  # fmt: skip
    assert [o.status for o in result.outcomes] == ["ran", "ran", "ran"]
    return root / "tasks", model, result


class _KillFirstJob(threading.Thread):
    """SIGKILLs the process of the first stage's job as soon as it holds its claim: a node
    that dies halfway through a stage."""

    def __init__(self, claim: Path):
        super().__init__(daemon=True)
        self.claim, self.killed, self.stop = claim, None, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            data = claims.owner(self.claim)
            if data and data.get("pid") and data["pid"] != os.getpid():
                os.kill(data["pid"], signal.SIGKILL)
                self.killed = data["pid"]
                return


def _slurm_run(tasks: Path, model, out: Path, retries: int, kill: bool, lines: list, only=()):
    killer = _KillFirstJob(out / "runs" / model.folder / f"{TASKS[0]}.claim")
    if kill:
        killer.start()
    options = SlurmOptions(cluster="local", retries=retries, poll_s=0.5)
    try:
        return pipeline.evaluate([model], out, tasks, only, grid_points=1, tensorflow="stand-in", report=lines.append,
                                 engine="slurm", slurm=options), killer.killed  # fmt: skip
    finally:
        killer.stop.set()


@pytest.mark.slow
def test_local_executor_gives_the_plain_runs_scores_and_retries_a_killed_job(plain_run, tmp_path):
    """Each stage a submitit job (local executor); the first stage's job is killed halfway and
    submitted again by the driver: the same scores as the plain run, nothing left over."""
    tasks, model, plain = plain_run
    lines: list = []
    result, killed = _slurm_run(tasks, model, tmp_path / "out", retries=1, kill=True, lines=lines)
    assert killed, "the first stage's job was never seen holding its claim"
    assert [o.status for o in result.outcomes] == ["ran", "ran", "ran"], [o.message for o in result.outcomes]
    assert sum("ended without a result" in line and "submitted again" in line for line in lines) == 1, lines
    assert _scores(result) == _scores(plain) and {s.task for s in result.scores} == set(TASKS)
    assert len({(s.task, s.metric) for s in result.scores}) == len(result.scores)  # each counted once
    runs = tmp_path / "out" / "runs" / model.folder
    assert sorted(p.name for p in runs.iterdir()) == sorted([*TASKS, "validate.log", "validated.json"])
    assert len(list((tmp_path / "out" / "slurm").glob("*_submitted.pkl"))) == 3  # 2 stages + 1 retry


@pytest.mark.slow
def test_a_killed_job_without_retries_is_reported_and_the_next_run_redoes_it(plain_run, tmp_path):
    """One stage (the first task), its job killed: failed, with the job's log; no score."""
    tasks, model, plain = plain_run
    out = tmp_path / "out"
    result, killed = _slurm_run(tasks, model, out, retries=0, kill=True, lines=[], only=TASKS[:1])
    assert killed
    assert [o.status for o in result.outcomes] == ["ran", "failed"]
    failed = result.failed[0]
    assert failed.task == TASKS[0]
    assert "ended without a result" in failed.message and "run the same command again" in failed.message
    assert Path(failed.log).parent == out / "slurm" and Path(failed.log).is_file()
    assert result.scores == []
    again, _ = _slurm_run(tasks, model, out, retries=0, kill=False, lines=[], only=TASKS[:1])
    assert [o.status for o in again.outcomes] == ["skipped", "ran"], [(o.message, o.log) for o in again.outcomes]
    assert _scores(again) == [s for s in _scores(plain) if s[1] == TASKS[0]] != []


# --- a background driver stopped by SIGTERM leaves no job behind ------------------------------

def _processes_naming(text: str) -> list:
    """(pid, command line) of every live process whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if text in command:
            found.append((int(entry.name), command))
    return found


def _ended(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _ignores_sigint(pid: int) -> bool:
    ignored = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("SigIgn:"))
    return bool(int(ignored.split()[1], 16) >> (signal.SIGINT - 1) & 1)


def _wait_until(done, what: str, limit_s: float = 300.0) -> None:
    """Poll `done()`; a hang guard (`limit_s`), not a timing check."""
    deadline = time.monotonic() + limit_s
    while not done():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.05)


def _files(folder: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_sigterm_to_a_background_driver_leaves_no_local_job_running(tmp_path):
    """`evaluate --engine slurm --slurm-cluster local` started with `cmd &` (so it and its jobs
    ignore SIGINT, submitit's local cancel), SIGTERMed while a job runs its stage: when the
    driver has ended, no process of the run is left, the stage released its claim, and nothing
    under --out changes afterwards."""
    need("heareval", "the HEAR tools")
    need("submitit", "the Slurm engine")
    write_suite(tmp_path / "tasks", tasks=TASKS[:1])
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "hear_matpac.cli", "evaluate", "--engine", "slurm", "--slurm-cluster", "local",
            "--tasks-dir", str(tmp_path / "tasks"), "--out", str(out), "--weights", str(TINY_UNTRAINED),
            "--no-chart", "--grid-points", "1", "--tensorflow", "stand-in"]  # fmt: skip
    started = subprocess.run(["bash", "-c", '"$@" > "$LOG" 2>&1 & echo $!', "bash", *argv], capture_output=True,
                             text=True, env={**os.environ, "LOG": str(tmp_path / "driver.log")}, check=True)  # fmt: skip
    driver = int(started.stdout)
    claim = out / "runs" / check_model(f"hear_matpac:{TINY_UNTRAINED}").folder / f"{TASKS[0]}.claim"
    try:
        assert _ignores_sigint(driver)  # as `cmd &` leaves it: submitit's SIGINT alone would not stop its jobs
        while not ((claims.owner(claim) or {}).get("pid") not in (None, driver)):  # a job runs the stage
            assert not _ended(driver), (tmp_path / "driver.log").read_text()
            time.sleep(0.05)
        assert _processes_naming(str(out)), "no job process seen"
        os.kill(driver, signal.SIGTERM)
        _wait_until(lambda: _ended(driver), "the driver to end")
        assert _processes_naming(str(tmp_path)) == [], (tmp_path / "driver.log").read_text()
        assert not claim.exists()  # the stage stopped its tool and let go
        before = _files(out)
        time.sleep(2.0)  # anything still writing would show
        assert _files(out) == before
    finally:
        for pid, _ in _processes_naming(str(tmp_path)):
            os.kill(pid, signal.SIGKILL)


STUBBORN_JOB = """
import os, signal, time
from hear_matpac.evaluate.engines import slurm

def job(pid_file):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a stage that does not stop when told
    slurm._die_with_controller()
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)
"""


def test_a_local_job_that_outlives_its_cancel_is_killed_with_its_controller(tmp_path, monkeypatch):
    """The grace period's end: the controller is SIGKILLed, and the job's process dies with it."""
    need("submitit", "the Slurm engine")
    (tmp_path / "stubborn_job.py").write_text(STUBBORN_JOB)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(tmp_path))
    import stubborn_job

    executor = make_executor(SlurmOptions(cluster="local", gpus_per_stage=0), tmp_path / "slurm")
    job = executor.submit(stubborn_job.job, str(tmp_path / "pid"))
    _wait_until(lambda: (tmp_path / "pid").is_file() and (tmp_path / "pid").read_text() or job.done(), "the job")
    assert not job.done(), job.stderr()
    pid = int((tmp_path / "pid").read_text())
    try:
        slurm.cancel_jobs([job], grace_s=0.5)
        assert job._process.returncode == -signal.SIGKILL  # the controller, killed at the end of the grace
        _wait_until(lambda: _ended(pid), "the job's process to die with its controller")
    finally:
        if not _ended(pid):
            os.kill(pid, signal.SIGKILL)
