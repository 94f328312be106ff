"""The HEAR team's tools on hear_matpac: the TensorFlow stand-in, the launchers, the pinned
install files, and end-to-end runs of hear-validator and both heareval runners.

The end-to-end tests (marked `slow`) need `hear-matpac install-hear-tools --tensorflow-cpu`;
they skip where the tools are missing, except under CI (`CI` set), where they fail instead.
"""
from __future__ import annotations

import importlib.metadata
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import hear_matpac
from hear_matpac.cli import parse
from hear_matpac.hear_tools import install, tensorflow_standin
from hear_matpac.hear_tools.launch import link_task_dirs
from hear_matpac.reports.results import format_scores, read_scores
from hear_matpac.hear_tools.tasks import write_suite
from hear_matpac.weights.locate import TINY_UNTRAINED

from conftest import hear_matpac_cli, need, ok  # noqa: F401 - shared helpers (conftest.py)

STANDIN_NOTE = "gives hear_matpac's stand-in"
TASKS = ("synth_events", "synth_pitch_3fold", "synth_scene_multiclass", "synth_scene_multilabel")


# --- the TensorFlow stand-in ------------------------------------------------------------


def test_standin_covers_what_the_hear_tools_touch():
    tf = tensorflow_standin.make_standin()
    model = hear_matpac.load_model(TINY_UNTRAINED)
    assert not isinstance(model, tf.Module)
    assert isinstance(model, torch.nn.Module)
    assert tf.test.is_gpu_available(cuda_only=False, min_cuda_compute_capability=None) is torch.cuda.is_available()
    with pytest.raises(AttributeError, match="tensorflow-cpu"):
        tf.constant(1.0)
    with pytest.raises(AttributeError, match="stand-in"):
        tf.test.gpu_device_name()


@pytest.fixture(autouse=True)
def tensorflow_modules_unchanged():
    """Every test here leaves `sys.modules`' tensorflow entries as it found them: a stand-in
    registered by one test must not be what a later test imports."""
    before = {n: m for n, m in sys.modules.items() if n == "tensorflow" or n.startswith("tensorflow.")}
    yield
    after = {n: m for n, m in sys.modules.items() if n == "tensorflow" or n.startswith("tensorflow.")}
    assert after == before, f"tensorflow modules changed: {sorted(set(after) ^ set(before))}"


def test_select_tensorflow_registers_the_standin_only_when_asked_or_missing(monkeypatch, no_tensorflow_module):
    monkeypatch.setattr(tensorflow_standin, "tensorflow_installed", lambda: False)
    assert tensorflow_standin.select_tensorflow("auto") == "stand-in"
    import tensorflow as tf

    assert getattr(tf, tensorflow_standin.STANDIN_FLAG)
    with pytest.raises(ValueError, match="not installed"):
        tensorflow_standin.select_tensorflow("real")
    with pytest.raises(ValueError, match="one of"):
        tensorflow_standin.select_tensorflow("maybe")


def test_auto_prefers_real_tensorflow_except_cpu_build_on_gpu(monkeypatch, no_tensorflow_module):
    monkeypatch.setattr(tensorflow_standin, "tensorflow_installed", lambda: True)
    monkeypatch.setattr(tensorflow_standin, "_cpu_only_tensorflow", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    tried = []  # auto tries the import (a broken install falls back: test_cli_errors); not done here
    monkeypatch.setattr(tensorflow_standin, "_import_problem", lambda: tried.append(1))
    assert tensorflow_standin.select_tensorflow("auto") == "real"
    assert tried == [1] and "tensorflow" not in sys.modules
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert tensorflow_standin.select_tensorflow("real") == "real"
    assert tensorflow_standin.select_tensorflow("auto") == "stand-in"


def test_standin_refuses_to_replace_an_imported_tensorflow(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", type(sys)("tensorflow"))
    monkeypatch.setattr(tensorflow_standin, "tensorflow_installed", lambda: True)
    with pytest.raises(ValueError, match="already imported"):
        tensorflow_standin.select_tensorflow("stand-in")


# --- launchers, command line, install files, scores ----------------------------------------


def test_task_links_follow_heareval_layout_and_never_collide(tmp_path):
    a = tmp_path / "run1" / "hear_matpac" / "taskA"
    b = tmp_path / "run2" / "hear_matpac" / "taskA"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    rel = link_task_dirs([str(a), str(b), str(a)], work)
    assert rel[0] == "embeddings/hear_matpac/taskA" and rel[2] == rel[0]
    assert rel[1] != rel[0]
    assert [(work / r).resolve() for r in rel] == [a.resolve(), b.resolve(), a.resolve()]
    with pytest.raises(FileNotFoundError, match="not a folder"):
        link_task_dirs([str(tmp_path / "missing")], work)


def test_passthrough_arguments_keep_their_order():
    args = parse(["heareval", "predict", "--grid", "faster", "e/a", "--logs-dir", "L", "e/b", "--", "--shuffle", "1"])
    assert args.logs_dir == "L"
    assert args.upstream == ["--grid", "faster", "e/a", "e/b", "--shuffle", "1"]
    args = parse(["heareval", "embed", "hear_matpac", "--model", "w.pt", "--tensorflow", "stand-in"])
    assert (args.tensorflow, args.upstream) == ("stand-in", ["hear_matpac", "--model", "w.pt"])
    with pytest.raises(SystemExit):
        parse(["validate", "--grid", "faster"])


def test_install_commands_use_the_pinned_files():
    first, second = install.install_commands(tensorflow_cpu=True, python="py")
    assert first[:3] == ["py", "-m", "pip"] and "tensorflow-cpu" in first
    assert first[first.index("-r") + 1] == str(install.REQUIREMENTS)
    assert first[first.index("-c") + 1] == str(install.CONSTRAINTS)
    assert {"--no-deps", "--ignore-requires-python"} <= set(second)
    assert second[second.index("-r") + 1] == str(install.NO_DEPS)
    assert "tensorflow-cpu" not in install.install_commands()[0]


def pins(path: Path) -> dict:
    found = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s#]+)", line)
        if m:
            found[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return found


def test_requirements_agree_with_constraints():
    required, constrained = pins(install.REQUIREMENTS), pins(install.CONSTRAINTS)
    assert required["pytorch-lightning"] == "1.8.6"
    assert {"tensorflow-cpu", "sed-eval", "dcase-util"} <= set(constrained)
    assert {k: v for k, v in constrained.items() if k in required} == required
    assert pins(install.NO_DEPS) == {"heareval": "2021.1.3", "hearvalidator": "2021.0.6"}


def test_installed_hear_tools_match_the_pins():
    need("heareval", "the HEAR tools")
    wanted = {**pins(install.REQUIREMENTS), **pins(install.NO_DEPS)}
    for name, version in wanted.items():
        assert importlib.metadata.version(name) == version, name


def write_scores_file(task_dir: Path, meta: dict, results: dict) -> None:
    task_dir.mkdir(parents=True)
    (task_dir / "task_metadata.json").write_text(json.dumps(meta))
    (task_dir / "test.predicted-scores.json").write_text(json.dumps(results))


def test_read_scores_for_trainvaltest_and_kfold(tmp_path):
    write_scores_file(
        tmp_path / "a", {"task_name": "a", "evaluation": ["top1_acc", "mAP"], "splits": ["train", "valid", "test"]},
        {"test": {"test_score": 0.5, "test_top1_acc": 0.5, "test_mAP": 0.25, "test_loss": 3.0}},
    )  # fmt: skip
    fold = {"test_score": 0.7, "test_top1_acc": 0.7, "test_loss": 1.0}  # heareval 2021.1.3's k-fold layout
    write_scores_file(
        tmp_path / "b", {"task_name": "b", "evaluation": ["top1_acc", "mAP"], "splits": ["fold00", "fold01"]},
        {"fold00": fold, "fold01": {**fold, "test_top1_acc": 0.8, "test_score": 0.8},
         "aggregated_scores": {"test_top1_acc_mean": 0.75, "test_top1_acc_std": 0.1}},
    )  # fmt: skip
    rows = read_scores(tmp_path / "a") + read_scores(tmp_path / "b")
    assert [(r.task, r.metric, r.value, r.std) for r in rows[:4]] == [
        ("a", "top1_acc", 0.5, None), ("a", "mAP", 0.25, None), ("b", "top1_acc", 0.75, 0.1),
    ] + [("b", "mAP", rows[3].value, None)]  # fmt: skip
    assert math.isnan(rows[3].value)  # a metric heareval did not write shows as NaN, not a crash
    assert "0.7500 +- 0.1000 (2 folds)" in format_scores(rows)
    with pytest.raises(FileNotFoundError, match="predictions runner"):
        read_scores(tmp_path)


# --- end to end: the real HEAR tools -------------------------------------------------------


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory) -> Path:
    return write_suite(tmp_path_factory.mktemp("hear") / "tasks")[0].parent


def embed(tasks: Path, cwd: Path, tensorflow: str) -> subprocess.CompletedProcess:
    """heareval's embedding runner, with a relative --embeddings-dir (paths it records are
    then the same whichever folder it runs in)."""
    cwd.mkdir(parents=True, exist_ok=True)
    return ok(hear_matpac_cli(
        "heareval", "embed", "--tensorflow", tensorflow, "hear_matpac", "--model", str(TINY_UNTRAINED),
        "--tasks-dir", str(tasks), "--embeddings-dir", "embeddings", cwd=cwd,
    ))  # fmt: skip


@pytest.fixture(scope="module")
def standin_embeddings(tasks_dir, tmp_path_factory) -> Path:
    need("heareval", "the HEAR tools")
    cwd = tmp_path_factory.mktemp("embed-standin")
    result = embed(tasks_dir, cwd, "stand-in")
    assert STANDIN_NOTE in result.stderr
    return cwd / "embeddings" / "hear_matpac"


@pytest.mark.slow
def test_validator_passes_with_the_standin(tmp_path):
    need("hearvalidator", "the HEAR tools")
    result = ok(hear_matpac_cli("validate", "--weights", str(TINY_UNTRAINED), "--tensorflow", "stand-in", cwd=tmp_path))
    assert "Looks good!" in result.stdout
    assert STANDIN_NOTE in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_plain_upstream_validator_with_real_tensorflow(tmp_path):
    need("hearvalidator", "the HEAR tools")
    need("tensorflow", "the comparison with real TensorFlow")
    validator = Path(sys.executable).with_name("hear-validator")
    result = subprocess.run([str(validator), "hear_matpac", "-m", str(TINY_UNTRAINED)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    ok(result)
    assert "Looks good!" in result.stdout


@pytest.mark.slow
def test_embeddings_runner_writes_what_the_api_computes(tasks_dir, standin_embeddings):
    assert sorted(p.name for p in standin_embeddings.iterdir()) == sorted(TASKS)
    model = hear_matpac.load_model(TINY_UNTRAINED)
    for task in TASKS:
        out = standin_embeddings / task
        assert (out / ".done.embeddings").exists()
        meta = json.loads((out / "task_metadata.json").read_text())
        for split in meta["splits"]:
            n, dim = json.loads((out / f"{split}.embedding-dimensions.json").read_text())
            assert dim == model.scene_embedding_size
            name = sorted(json.loads((tasks_dir / task / f"{split}.json").read_text()))[0]
            audio, _ = sf.read(tasks_dir / task / "16000" / split / name, dtype=np.float32)
            batch = torch.from_numpy(audio)[None]
            written = np.load(out / split / f"{name}.embedding.npy")
            if meta["embedding_type"] == "scene":
                expected = hear_matpac.get_scene_embeddings(batch, model)[0].numpy()
            else:
                emb, ts = hear_matpac.get_timestamp_embeddings(batch, model)
                expected = emb[0].numpy()
                stamps = json.loads((out / split / f"{name}.timestamps.json").read_text())
                np.testing.assert_allclose(stamps, ts[0].numpy(), rtol=0, atol=1e-3)
            np.testing.assert_allclose(written, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_standin_and_real_tensorflow_give_byte_identical_embeddings(tasks_dir, standin_embeddings, tmp_path):
    need("tensorflow", "the comparison with real TensorFlow")
    result = embed(tasks_dir, tmp_path, "real")
    assert STANDIN_NOTE not in result.stderr
    real = tmp_path / "embeddings" / "hear_matpac"
    files = sorted(p.relative_to(standin_embeddings) for p in standin_embeddings.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(real) for p in real.rglob("*") if p.is_file())
    compared = [f for f in files if f.name != "profile.embeddings.json"]  # holds wall times
    assert sum(f.suffix == ".npy" for f in compared) > 100
    for f in compared:
        assert (standin_embeddings / f).read_bytes() == (real / f).read_bytes(), f


@pytest.mark.slow
def test_predictions_checkpoints_go_to_logs_dir(standin_embeddings, tmp_path):
    need("pytorch_lightning", "heareval's predictions runner")
    task = tmp_path / "emb" / "hear_matpac" / "synth_scene_multiclass"
    task.parent.mkdir(parents=True)
    subprocess.run(["cp", "-r", str(standin_embeddings / task.name), str(task)], check=True)
    for done in ("prediction-done.json", "test.predicted-scores.json"):
        (task / done).unlink(missing_ok=True)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    ok(hear_matpac_cli("heareval", "predict", "--logs-dir", str(tmp_path / "keep"), "--grid", "faster",
                       "--grid-points", "1", str(task), cwd=cwd))  # fmt: skip
    assert list(cwd.iterdir()) == []
    assert list((tmp_path / "keep" / "logs" / "embeddings" / "hear_matpac" / task.name).rglob("*.ckpt"))
    assert read_scores(task)


@pytest.mark.slow
def test_evaluate_main_job_prints_stage_times_and_finite_scores(tmp_path):
    """The main job: validator, embeddings runner and predictions runner (grid `faster`) on
    every synthetic task; heareval's logs/ land neither in the working directory nor in --out."""
    need("heareval", "the HEAR tools")
    need("pytorch_lightning", "heareval's predictions runner")
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    result = ok(hear_matpac_cli("evaluate", "--out", str(out), "--grid-points", "1", "--weights", str(TINY_UNTRAINED),
                                "--tensorflow", "stand-in", "--no-chart", cwd=tmp_path, env=env))  # fmt: skip
    model = next(p for p in (out / "runs").iterdir() if p.is_dir())
    assert model.name.startswith("hear_matpac-tiny_untrained-")
    assert re.search(r"^\d\d:\d\d:\d\d hear_matpac-\S+: hear-validator passed \(\d+\.\d s\)$", result.stdout, re.M)
    for task in TASKS:
        assert re.search(rf"^\d\d:\d\d:\d\d \[\d/4\] {model.name} / {task}: done in \d+\.\d s$", result.stdout, re.M)
    assert "TINY UNTRAINED" in result.stderr
    assert "Looks good!" in (model / "validate.log").read_text()
    for task in TASKS:
        meta = json.loads((out / "tasks" / task / "task_metadata.json").read_text())
        scores = read_scores(model / task)
        assert [s.metric for s in scores] == meta["evaluation"]
        assert all(math.isfinite(s.value) for s in scores), scores
    summary = json.loads((out / "summary.json").read_text())
    assert sorted({s["task"] for s in summary["scores"]}) == sorted(TASKS)
    primary = {}
    for s in summary["scores"]:
        primary.setdefault(s["task"], s)
    for s in primary.values():
        assert re.search(rf"^\| {s['task']} \| {s['metric']} \| (\*\*)?{s['value']:.4f}", result.stdout, re.M)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert not list(out.rglob("logs"))


def test_the_tools_entry_point_dispatches_without_the_cli(monkeypatch):
    """`python -m hear_matpac.hear_tools` (what `pipeline` spawns) calls the launchers itself."""
    from hear_matpac.hear_tools import __main__ as tools_main

    calls = []
    monkeypatch.setattr(tools_main, "run_validator", lambda *a: calls.append(("validate", *a)) or 0)
    monkeypatch.setattr(tools_main, "run_embeddings", lambda *a: calls.append(("embed", *a)) or 0)
    monkeypatch.setattr(tools_main, "run_predictions", lambda *a: calls.append(("predict", *a)) or 0)
    assert tools_main.main(["validate", "W.pt", "--tensorflow", "stand-in"]) == 0
    assert tools_main.main(["embed", "--tensorflow", "real", "hear_matpac", "--model", "W"]) == 0
    assert tools_main.main(["embed", "--declared", "D.json", "toy", "--tasks-dir", "T"]) == 0
    assert tools_main.main(["predict", "--logs-dir", "L", "E/t", "--grid", "faster"]) == 0
    assert calls == [
        ("validate", "W.pt", None, "stand-in", "hear_matpac"),
        ("embed", ["hear_matpac", "--model", "W"], "real", None),
        ("embed", ["toy", "--tasks-dir", "T"], "auto", "D.json"),
        ("predict", ["E/t", "--grid", "faster"], "L"),
    ]
    assert tools_main.main([]) == 2 and tools_main.main(["validate"]) == 2
