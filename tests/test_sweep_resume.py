"""`sweep` is `evaluate` over generated specs (issue 26): a second identical sweep reuses every
stage and rewrites the same table; a changed list of window lengths runs only the new length.

Real `hear-matpac sweep` command lines (in this process) on the synthetic suite with the bundled
tiny checkpoint; the HEAR tools are the stand-ins of `standin_tools.py`, counted here, so a
test can tell a stage that ran from one that was reused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import standin_tools
from hear_matpac.cli import main
from hear_matpac.evaluate import stages, tools
from hear_matpac.evaluate.specs import check_model
from hear_matpac.weights.locate import TINY_UNTRAINED

TASKS = "synth_scene_multiclass,synth_pitch_3fold"
OUTPUTS = ("sweep.md", "sweep.csv", "sweep.json")


@pytest.fixture
def ran(monkeypatch):
    """The stand-in tools in place; the list of (tool, window_seconds) of every tool started."""
    started = []

    def counted(self, name, tool_args, log, env=None, python=""):
        args = list(tool_args)
        options = json.loads(args[args.index("--model-options") + 1]) if "--model-options" in args else {}
        started.append((args[0], options.get("window_seconds")))
        return standin_tools.run_tool(name, tool_args, log, env, python)

    monkeypatch.setattr(tools.Tools, "run", counted)
    monkeypatch.setattr(stages, "check_task_embeddings", standin_tools.check_task_embeddings)
    return started


def _sweep(out: Path, windows: str) -> int:
    return main(["sweep", "--out", str(out), "--weights", str(TINY_UNTRAINED), "--no-chart", "--tensorflow",
                 "stand-in", "--grid-points", "1", "--tasks", TASKS, "--window-seconds", windows])  # fmt: skip


def _files(root: Path) -> dict:
    """Every file and folder under `root` with its inode and modification time: equal means
    neither rewritten nor replaced."""
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*")}


def _stage_folder(out: Path, seconds: float) -> Path:
    return out / "sweep" / "runs" / check_model(f"hear_matpac:{TINY_UNTRAINED}:{json.dumps({'window_seconds': seconds})}").folder


def test_a_second_identical_sweep_reuses_every_stage_and_writes_the_same_table(tmp_path, ran, capsys):
    out = tmp_path / "R"
    assert _sweep(out, "0.96,6.08") == 0
    assert sorted(t for t, _ in ran) == ["embed"] * 4 + ["predict"] * 4 + ["validate"] * 2
    first = {name: (out / name).read_bytes() for name in OUTPUTS}
    runs = _files(out / "sweep" / "runs")
    embeddings = [p for p in runs if p.endswith("profile.embeddings.json")]
    assert len(embeddings) == 4  # 2 lengths x 2 tasks, in evaluate's layout
    assert "| 0.96 | 0.0 | 0.02 | 2250.0 | 100 |" in first["sweep.md"].decode()  # 2 tasks' cost summed
    capsys.readouterr()
    ran.clear()
    assert _sweep(out, "0.96,6.08") == 0
    assert ran == []  # no tool started: every stage and validation reused
    assert "stages: 4 skipped; hear-validator: 2 skipped" in capsys.readouterr().out
    assert _files(out / "sweep" / "runs") == runs  # the embeddings and scores untouched
    # the same table: the cost of a reused stage is the one recorded when it ran
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == first


def test_a_changed_list_of_lengths_runs_only_the_new_length(tmp_path, ran, capsys):
    out = tmp_path / "R"
    assert _sweep(out, "0.96") == 0
    kept = _files(_stage_folder(out, 0.96))
    [row] = json.loads((out / "sweep.json").read_text())
    capsys.readouterr()
    ran.clear()
    assert _sweep(out, "0.96,1.92") == 0
    assert sorted(ran) == [("embed", 1.92)] * 2 + [("predict", None)] * 2 + [("validate", None)]
    assert "stages: 2 ran, 2 skipped; hear-validator: 1 ran, 1 skipped" in capsys.readouterr().out
    assert _files(_stage_folder(out, 0.96)) == kept
    rows = json.loads((out / "sweep.json").read_text())
    assert [r["label"] for r in rows] == ["0.96", "1.92"] and rows[0] == row
    assert [r["options"] for r in rows] == [{"window_seconds": 0.96}, {"window_seconds": 1.92}]
