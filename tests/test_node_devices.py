"""`hear-matpac evaluate` on all devices of a node (issue 17, item 1): `--devices` and `--jobs`
checked in one line, each slot's tools pinned to their GPU with a share of the cores, stages
started longest first, run at the same time, a failed stage contained, an interruption
stopping every tool, and `--jobs 2` giving exactly the scores of `--jobs 1`."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hear_matpac.cli import main
from hear_matpac.evaluate import run as pipeline, stages
from hear_matpac.evaluate.engines import local as slots
from hear_matpac.evaluate.specs import check_model
from hear_matpac.hear_tools.tasks import suite, write_suite
from hear_matpac.weights.locate import TINY_UNTRAINED

from conftest import hear_matpac_cli, need

REPO = Path(__file__).resolve().parents[1]

# A HEAR module that records the environment each HEAR tool process gives it, then behaves as
# SPY_MODE says: `fail-validate` (hear-validator fails), `kill-embed` (the embedding runner's
# process is killed, as the kernel's out-of-memory killer would), else hear_matpac itself.
SPY = '''
import json, os, pathlib, signal
import hear_matpac
from hear_matpac import get_scene_embeddings, get_timestamp_embeddings

def load_model(model_file_path="", **options):
    argv = pathlib.Path("/proc/self/cmdline").read_text().split(chr(0))  # as started (tools swap sys.argv)
    tool = argv[argv.index("hear_matpac.hear_tools") + 1]
    seen = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    record = pathlib.Path(os.environ["SPY_DIR"]) / f"{tool}-{os.getpid()}.json"
    record.write_text(json.dumps({"tool": tool, "argv": argv, **seen}))
    mode = os.environ.get("SPY_MODE", "")
    if mode == "fail-validate" and tool == "validate":
        raise RuntimeError("the spy refuses")
    if mode == "kill-embed" and tool == "embed":
        os.kill(os.getpid(), signal.SIGKILL)
    return hear_matpac.load_model(model_file_path, **options)
'''


@pytest.fixture
def spy(tmp_path, monkeypatch) -> Path:
    """The spy module importable here and in every child; returns the folder of its records."""
    (tmp_path / "spy_plugin.py").write_text(SPY)
    records = tmp_path / "records"
    records.mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(REPO)]))
    monkeypatch.setenv("SPY_DIR", str(records))
    for name in slots.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return records


def _records(folder: Path, tool: str) -> list:
    return [json.loads(p.read_text()) for p in sorted(folder.glob(f"{tool}-*.json"))]


# --- --devices and --jobs --------------------------------------------------------------------

@pytest.mark.parametrize("argv, gpus, problem", [
    (["--devices", "cuda:0"], 0, "CUDA is not available here"),
    (["--devices", "gpu0"], 0, "'gpu0' is not cpu or cuda:N"),
    (["--devices", "cuda"], 2, "name each GPU"),
    (["--devices", "cpu,cpu"], 0, "cpu given twice"),
    (["--devices", "cuda:1,cuda:0,cuda:1"], 2, "cuda:1 given twice"),
    (["--devices", "cuda:2"], 2, "has 2 visible GPU"),
    (["--devices", "cpu,"], 0, "a list of devices is needed"),
    (["--jobs", "0"], 0, "--jobs must be a whole number of at least 1"),
])  # fmt: skip
def test_bad_devices_or_jobs_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, gpus, problem):
    monkeypatch.setattr(slots, "gpu_count", lambda: gpus)
    out = tmp_path / "out"
    assert main(["evaluate", "--out", str(out), "--weights", str(TINY_UNTRAINED), "--no-chart", *argv]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and problem in err[0], err
    assert not out.exists()


def test_default_devices_are_every_visible_gpu_else_cpu(monkeypatch):
    monkeypatch.setattr(slots, "gpu_count", lambda: 0)
    assert slots.parse_devices("") == ["cpu"] and slots.parse_devices("auto") == ["cpu"]
    monkeypatch.setattr(slots, "gpu_count", lambda: 3)
    assert slots.parse_devices("") == ["cuda:0", "cuda:1", "cuda:2"]
    assert slots.parse_devices(" cuda:2, cpu") == ["cuda:2", "cpu"]


def test_slots_interleave_devices_pin_each_gpu_and_share_the_cores(monkeypatch):
    monkeypatch.setattr(slots, "gpu_count", lambda: 2)
    for name in slots.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # this process sees GPUs 5 and 7 as cuda:0, cuda:1
    made = slots.make_slots(["cuda:0", "cuda:1"], jobs=2, cores=8)
    alloc = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}  # GPU slots only
    assert [(s.device, s.env) for s in made] == [
        (d, {"CUDA_VISIBLE_DEVICES": g, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", **alloc})
        for d, g in [("cuda:0", "5"), ("cuda:1", "7")] * 2]  # fmt: skip
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert slots.make_slots(["cuda:1"], cores=8) == [slots.Slot("cuda:1", {"CUDA_VISIBLE_DEVICES": "1", **alloc})]  # one slot: all cores
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:64")  # the user's own setting is kept
    assert slots.make_slots(["cuda:1"], cores=8)[0].env == {"CUDA_VISIBLE_DEVICES": "1"}
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own setting is kept
    assert slots.make_slots(["cpu"], jobs=3, cores=2)[2].env == {"CUDA_VISIBLE_DEVICES": "", "MKL_NUM_THREADS": "1"}


# --- the pool --------------------------------------------------------------------------------

def _slots(n: int) -> list:
    return [slots.Slot("cpu", {"N": str(i)}) for i in range(n)]


def test_the_pool_runs_items_at_the_same_time_and_keeps_their_order():
    both_running = threading.Barrier(2, timeout=30)  # broken unless two items run at once

    def work(item, slot):
        if item < 2:
            both_running.wait()
        return item * 10, slot.env["N"]

    results = slots.run_on_slots([0, 1, 2, 3, 4], _slots(2), work, stop=lambda: None)
    assert [r[0] for r in results] == [0, 10, 20, 30, 40]
    assert {r[1] for r in results[:2]} == {"0", "1"}  # the first two items took both slots


def test_an_error_in_one_item_lets_the_running_ones_finish_and_starts_no_more():
    started, finished = [], []
    other_running = threading.Event()

    def work(item, slot):
        started.append(item)
        if item == 0:
            other_running.wait(30)
            raise OSError("disk full")
        other_running.set()
        time.sleep(0.2)
        finished.append(item)
        return item

    with pytest.raises(OSError, match="disk full"):
        slots.run_on_slots([0, 1, 2, 3], _slots(2), work, stop=lambda: None)
    assert finished == [1] and sorted(started) == [0, 1]  # item 1 finished; items 2 and 3 never started


def test_an_interrupted_pool_stops_the_tools_and_winds_up_the_running_items():
    stopped = threading.Event()
    wound_up, started = [], []
    both_running = threading.Barrier(2, timeout=30)

    def work(item, slot):
        started.append(item)
        both_running.wait()  # items 2... never get here: they are not started
        if item == 0:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C: KeyboardInterrupt in the main thread
        try:
            assert stopped.wait(30), "stop() was not called"  # as a tool stopped by stop_tools returns
        finally:
            wound_up.append(item)
        return item

    with pytest.raises(KeyboardInterrupt):
        slots.run_on_slots(list(range(6)), _slots(2), work, stop=stopped.set)
    assert sorted(wound_up) == sorted(started) == [0, 1]


def test_stages_start_longest_task_first(tmp_path, monkeypatch):
    """evaluate hands the stages to `run_stages` by decreasing audio duration, counted here from
    the suite's own clip counts and durations; outcomes come back in plan order."""
    names = [t.name for t in suite()]
    write_suite(tmp_path / "tasks", tasks=names)
    duration = {t.name: t.sample_duration * sum(t.clips_per_split) for t in suite()}
    assert len(set(duration.values())) == len(duration)
    models = [check_model(f"hear_matpac:{TINY_UNTRAINED}"), check_model(f'hear_matpac:{TINY_UNTRAINED}:{{"layer": 1}}')]
    monkeypatch.setattr(pipeline, "validate", lambda m, *a, **k: stages.Outcome(m.folder, stages.VALIDATE, "ran"))
    handed = []

    def run_stages(engine, order, *args, **kwargs):
        handed.extend(order)
        return [stages.Outcome.of(p, "ran", message=p.task) for p in order]

    monkeypatch.setattr(slots.LocalEngine, "run", run_stages)
    result = pipeline.evaluate(models, tmp_path / "out", tmp_path / "tasks", devices=["cpu"], jobs=2, report=lambda _: None)
    by_length = sorted(names, key=lambda n: -duration[n])
    assert [(p.task, p.model_key) for p in handed] == [(t, m.key) for t in by_length for m in models]
    assert [(o.plan.model_key, o.message) for o in result.outcomes[2:]] == [(m.key, t) for m in models for t in sorted(names)]


# --- real runs -------------------------------------------------------------------------------

def test_each_slot_s_tools_see_only_its_gpu(tmp_path, spy, monkeypatch, capsys):
    """Two models, validated at the same time on two (pretended) GPUs: each hear-validator
    process sees its slot's GPU, as this process numbers it, and half the cores."""
    need("hearvalidator", "the HEAR tools")
    monkeypatch.setattr(slots, "gpu_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    monkeypatch.setenv("SPY_MODE", "fail-validate")  # no stage runs after: a quick test
    cores = len(os.sched_getaffinity(0))
    argv = ["evaluate", "--out", str(tmp_path / "out"), "--no-chart", "--tensorflow", "stand-in",
            "--devices", "cuda:0,cuda:1", "--tasks", "synth_scene_multiclass",
            "--model", 'spy_plugin::{"a": 1}', "--model", 'spy_plugin::{"a": 2}']  # fmt: skip
    assert main(argv) == 1
    seen = _records(spy, "validate")
    assert sorted(r["CUDA_VISIBLE_DEVICES"] for r in seen) == ["5", "7"]
    assert {(r["OMP_NUM_THREADS"], r["MKL_NUM_THREADS"]) for r in seen} == {(str(max(1, cores // 2)),) * 2}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert sorted(s["device"] for s in summary["stages"] if s.get("stage") == "validate") == ["cuda:0", "cuda:1"]
    failed = [line for line in capsys.readouterr().err.splitlines() if "failed" in line]
    assert len(failed) == 2 and all("validate." in line and ".log" in line for line in failed)  # each with its log


def _scores(out: Path, model: str = "") -> list:
    scores = json.loads((out / "summary.json").read_text())["scores"]
    return sorted((s["task"], s["metric"], s["value"]) for s in scores if s["model"].startswith(model))


def _overlap(a: dict, b: dict) -> bool:
    return a["started"] < b["finished"] and b["started"] < a["finished"]


@pytest.mark.slow
def test_jobs_2_gives_the_scores_of_jobs_1_and_a_killed_stage_stays_in_its_processes(tmp_path, spy, monkeypatch):
    need("heareval", "the HEAR tools")
    need("pytorch_lightning", "heareval's predictions runner")
    common = ["--tasks", "synth_scene_multiclass,synth_pitch_3fold", "--grid-points", "1", "--no-chart",
              "--tensorflow", "stand-in", "--devices", "cpu"]  # fmt: skip
    alone = hear_matpac_cli("evaluate", "--out", str(tmp_path / "one"), "--jobs", "1", *common,
                            "--model", f"hear_matpac:{TINY_UNTRAINED}", cwd=tmp_path)  # fmt: skip
    assert alone.returncode == 0, alone.stderr[-3000:]
    monkeypatch.setenv("SPY_MODE", "kill-embed")
    two = hear_matpac_cli("evaluate", "--out", str(tmp_path / "two"), "--jobs", "2", *common,
                          "--model", f"hear_matpac:{TINY_UNTRAINED}", "--model", f"spy_plugin:{TINY_UNTRAINED}", cwd=tmp_path)  # fmt: skip
    assert two.returncode == 1, two.stderr[-3000:]
    # the same scores, whatever ran beside them
    assert _scores(tmp_path / "two", "hear_matpac-") == _scores(tmp_path / "one") != []
    stages = [s for s in json.loads((tmp_path / "two" / "summary.json").read_text())["stages"] if "task" in s]
    status = {(s["module"], s["task"]): s["status"] for s in stages}
    assert status == {("hear_matpac", "synth_scene_multiclass"): "ran", ("hear_matpac", "synth_pitch_3fold"): "ran",
                      ("spy_plugin", "synth_scene_multiclass"): "failed", ("spy_plugin", "synth_pitch_3fold"): "failed"}  # fmt: skip
    # each killed stage is reported with its log, which holds the runner's command
    failed = [line for line in two.stderr.splitlines() if "failed" in line]
    assert len(failed) == 2 and all("spy_plugin" in line and "embed.log" in line for line in failed)
    for s in stages:
        if s["status"] == "failed":
            assert "exit -9" in s["message"] and "heareval" not in s["message"] and Path(s["log"]).is_file()
    # stages ran at the same time, longest task (synth_scene_multiclass) first
    assert any(_overlap(a, b) for a in stages for b in stages if a is not b)
    first = sorted(stages, key=lambda s: s["started"])[:2]
    assert {s["task"] for s in first} == {"synth_scene_multiclass"}
    labels = [line.split("] ", 1)[1] for line in two.stdout.splitlines() if "[1/4]" in line or "[2/4]" in line]
    assert labels and all("synth_scene_multiclass" in line for line in labels)
    # what each embedding process saw: no GPU, one thread each on 2 slots
    seen = _records(spy, "embed")
    cores = len(os.sched_getaffinity(0))
    assert len(seen) == 2 and all(r["CUDA_VISIBLE_DEVICES"] == "" and r["OMP_NUM_THREADS"] == str(max(1, cores // 2))
                                  for r in seen)  # fmt: skip


def _group_alive(pgid: int) -> list:
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


@pytest.mark.slow
def test_sigterm_stops_every_stage_s_tools_and_releases_the_claims(tmp_path):
    need("heareval", "the HEAR tools")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "hear_matpac.cli", "evaluate", "--out", str(out), "--jobs", "2",
               "--devices", "cpu", "--tasks", "synth_scene_multiclass,synth_pitch_3fold", "--grid-points", "1",
               "--no-chart", "--tensorflow", "stand-in", "--weights", str(TINY_UNTRAINED)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    victim = subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(1200):  # both stages claimed and their embedding runners started
            if len(list(out.glob("runs/*/*.claim"))) == 2 and len(_group_alive(victim.pid)) >= 3:
                break
            assert victim.poll() is None, "evaluate ended before both stages ran"
            time.sleep(0.05)
        else:
            pytest.fail("two stages never ran at once")
        victim.send_signal(signal.SIGTERM)  # to evaluate alone: it must stop its tools itself
        assert victim.wait(timeout=120) == 128 + signal.SIGTERM
        for _ in range(200):
            if not _group_alive(victim.pid):
                break
            time.sleep(0.05)
        assert _group_alive(victim.pid) == []
        assert list(out.glob("runs/*/*.claim")) == []
    finally:
        for pid in _group_alive(victim.pid):
            os.kill(pid, signal.SIGKILL)
