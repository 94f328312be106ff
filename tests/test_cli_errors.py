"""Every subcommand: a user's mistake or an operating-system error is one line on stderr with
the path and the reason, exit status 2; folders are made with the umask like other tools."""
from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import types
from pathlib import Path

import pytest
import torch

from hear_matpac.cli import main
from hear_matpac.hear_tools import tensorflow_standin
from hear_matpac.hear_tools.tasks import write_suite
from hear_matpac.weights.locate import TINY_UNTRAINED

TINY = str(TINY_UNTRAINED)


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith(("!", "WARNING", "Its embeddings", "No MATPAC"))]
    assert len(lines) == 1 and lines[0].startswith(f"hear-matpac {command}: error: "), err
    return lines[0]


@pytest.fixture()
def afile(tmp_path: Path) -> Path:
    path = tmp_path / "afile"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--weights", TINY, "--tensorflow", "stand-in"],
        ["sweep", "--weights", TINY, "--no-chart", "--tasks", "synth_pitch_3fold"],
    ],
    ids=["evaluate", "sweep"],
)
def test_out_naming_a_file(argv, afile: Path, capsys) -> None:
    assert main([*argv, "--out", str(afile)]) == 2
    line = _one_line_error(capsys, argv[0])
    assert f"--out {afile} is not a folder" in line
    assert afile.read_text() == "not a folder"


def test_compare_out_naming_a_file(tmp_path: Path, afile: Path, capsys) -> None:
    task = tmp_path / "embeddings" / "hear_matpac" / "t"
    task.mkdir(parents=True)
    (task / "task_metadata.json").write_text(json.dumps({"task_name": "t", "evaluation": ["top1_acc"]}))
    (task / "test.predicted-scores.json").write_text(json.dumps({"test": {"test_score": 0.5, "test_top1_acc": 0.5}}))
    assert main(["compare", str(tmp_path / "embeddings"), "--no-chart", "--out", str(afile)]) == 2
    assert f"--out {afile} is not a folder" in _one_line_error(capsys, "compare")


def test_make_tasks_under_a_file(afile: Path, capsys) -> None:
    assert main(["make-tasks", str(afile / "sub"), "--tasks", "synth_pitch_3fold"]) == 2
    assert f"cannot create {afile / 'sub'}: {afile} is not a folder" in _one_line_error(capsys, "make-tasks")


def test_make_tasks_force_through_a_symlink_replaces_its_target(tmp_path: Path, capsys) -> None:
    target = tmp_path / "real"
    write_suite(target, tasks=["synth_pitch_3fold"])
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    (target / "stale.txt").write_text("a user's file")  # not made by hear-matpac: refused, kept (issue 16)
    assert main(["make-tasks", str(link), "--overwrite", "--tasks", "synth_scene_multiclass"]) == 2
    assert "did not make" in capsys.readouterr().err and (target / "stale.txt").is_file()
    (target / "stale.txt").unlink()
    assert main(["make-tasks", str(link), "--overwrite", "--tasks", "synth_scene_multiclass"]) == 0
    assert capsys.readouterr().out.split() == [str(link / "synth_scene_multiclass")]
    assert link.is_symlink() and sorted(p.name for p in target.iterdir()) == ["synth_scene_multiclass"]


def test_make_tasks_folders_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_suite(tmp_path / "tasks", tasks=["synth_pitch_3fold"])
    finally:
        os.umask(old)
    for folder in [tmp_path / "tasks", tmp_path / "tasks" / "synth_pitch_3fold"]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder


@pytest.mark.parametrize("seconds", ["inf", "nan", "-1", "1e9"])
def test_demo_seconds_out_of_range(seconds: str, capsys) -> None:
    assert main(["demo", "--weights", TINY, "--seconds", seconds]) == 2
    assert "--seconds must be a number of seconds in (0, 3600]" in _one_line_error(capsys, "demo")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where CUDA is missing")
def test_validate_cuda_without_gpu(capsys) -> None:
    assert main(["validate", "--weights", TINY, "--device", "cuda", "--tensorflow", "stand-in"]) == 2
    assert "--device cuda: CUDA is not available here" in _one_line_error(capsys, "validate")


@pytest.fixture()
def broken_tensorflow(tmp_path: Path, monkeypatch) -> None:
    """An installed `tensorflow` whose import fails, as a TensorFlow built for another CPU or
    numpy does; nothing of any real TensorFlow stays imported."""
    package = tmp_path / "site" / "tensorflow"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from . import _core\n")
    (package / "_core.py").write_text("raise ImportError('libtensorflow_framework.so.2: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [n for n in sys.modules if n == "tensorflow" or n.startswith("tensorflow.")]:
        monkeypatch.delitem(sys.modules, name)
    yield
    for name in [n for n in sys.modules if n == "tensorflow" or n.startswith("tensorflow.")]:
        del sys.modules[name]


def test_tensorflow_that_fails_to_import_falls_back_to_the_standin(broken_tensorflow, capsys) -> None:
    assert tensorflow_standin.select_tensorflow("auto") == "stand-in"
    err = capsys.readouterr().err
    assert "TensorFlow is installed but fails to import (ImportError: libtensorflow_framework" in err
    assert "stand-in" in err
    import tensorflow

    assert isinstance(tensorflow, types.ModuleType) and getattr(tensorflow, tensorflow_standin.STANDIN_FLAG)


def test_tensorflow_real_that_fails_to_import_is_one_line(broken_tensorflow) -> None:
    with pytest.raises(ValueError, match="fails to import .*use --tensorflow stand-in"):
        tensorflow_standin.select_tensorflow("real")


def test_a_bug_keeps_its_traceback_and_its_own_status(monkeypatch, capsys) -> None:
    """Not every TypeError is the user's: one raised by a bug deep in the library (here a
    wrong-signature call, injected) keeps its traceback and exits with BUG_STATUS, not 2."""
    from hear_matpac.cli import BUG_STATUS
    from hear_matpac.weights import info

    def broken(*args, **kwargs):
        raise TypeError("boom")

    monkeypatch.setattr(info, "describe", broken)
    assert BUG_STATUS not in (0, 1, 2)
    assert main(["info", TINY]) == BUG_STATUS
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "TypeError: boom" in err
    assert "hear-matpac info: internal error" in err.splitlines()[-1]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (PermissionError(13, "Permission denied", "/data/model.pt"), 2),  # the user's path: one line
        (IsADirectoryError(21, "Is a directory", "/data"), 2),
        (OSError(5, "Input/output error"), "bug"),  # not one the user can fix by a flag: its traceback
    ],
    ids=["permission", "a-folder", "io-error"],
)
def test_which_os_errors_are_the_users(error, status, monkeypatch, capsys) -> None:
    from hear_matpac.cli import BUG_STATUS
    from hear_matpac.weights import info

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(info, "describe", failing)
    assert main(["info", TINY]) == (BUG_STATUS if status == "bug" else status)
    if status == 2:
        assert _one_line_error(capsys, "info") == f"hear-matpac info: error: {error.filename}: {error.strerror}"
    else:
        assert "Traceback" in capsys.readouterr().err


def test_a_bug_on_a_rank_is_not_gathered_as_a_users_mistake() -> None:
    """On a torchrun rank a user's mistake is exchanged (the lowest failing rank says it, the
    others stop quietly); a bug is not: it ends its rank at once with its traceback."""
    from hear_matpac.files.ranks import RankGroup, Ranks
    from hear_matpac.io import InputError

    exchanged = []
    group = RankGroup(Ranks(rank=0, world=2, local_rank=0))
    group.all_gather = lambda value: exchanged.append(value) or [value, False]  # the other rank: no problem

    def bug():
        raise TypeError("boom")

    def mistake():
        raise InputError("--layer 7 is out of range")

    with pytest.raises(TypeError, match="boom"):
        group.agree(bug)
    assert exchanged == []
    with pytest.raises(InputError, match="out of range"):
        group.agree(mistake)
    assert exchanged == [True]


def test_version(capsys) -> None:
    from hear_matpac.version import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"hear-matpac {__version__}\n"


_LOADED = """
import sys
from hear_matpac.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = ("hear_matpac.hear_tools", "hear_matpac.files", "hear_matpac.reports", "hear_matpac.weights.download",
         "matplotlib", "soundfile", "submitit", "heareval")
loaded = [m for m in sys.modules if m.startswith(heavy)]
loaded += [m for m in sys.modules if m.startswith("hear_matpac.cli.") and m != "hear_matpac.cli." + sys.argv[1]]
print(sorted(loaded))
"""


@pytest.mark.parametrize("argv", [["--help"], ["info", TINY, "--json"]], ids=["help", "info"])
def test_subcommands_are_imported_only_when_they_run(argv, tmp_path: Path) -> None:
    """`hear-matpac --help` and `info` import no tool, files or reports module, and no other
    subcommand's module (each is imported when its subcommand runs)."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", _LOADED, *argv], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-2000:]


def test_each_subcommand_module_registers_its_description_and_function() -> None:
    """Every name in the lazy registry has a module that gives its parser a description and a
    function to run, and `--help` lists them with the registry's one-line help."""
    from hear_matpac.cli import SUBCOMMANDS, build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {a.dest: a.help for a in subparsers._choices_actions} == dict(SUBCOMMANDS)
    leaves = [subparsers.choices[name] for name, _ in SUBCOMMANDS]
    assert all(sub.description for sub in leaves)
    while leaves:  # `heareval RUNNER` and `weights ACTION` set the function on their own subcommands
        sub = leaves.pop()
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        leaves += [p for a in nested for p in a.choices.values()]
        assert nested or callable(sub.get_default("func")), sub.prog
