"""Shared flags: declared once (`cli/flags.py`), the same on every subcommand that takes them."""
from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from hear_matpac.cli import build_parser, main, parse
from hear_matpac.cli.flags import add_model_options, model_options
from hear_matpac.options import ModelOptions
from hear_matpac.weights.locate import TINY_UNTRAINED

MODEL_FLAGS = ["--" + f.name.replace("_", "-") for f in fields(ModelOptions)]


def _help(capsys, *command: str) -> str:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize("command, left_out", [
    (("demo",), ()), (("embed",), ("--max-windows",)), (("evaluate",), ()), (("sweep",), ()),
])  # fmt: skip
def test_model_option_flags_come_from_the_options_fields(capsys, command, left_out):
    text = _help(capsys, *command)
    for flag in ["--weights", "--model-options", *MODEL_FLAGS]:
        if flag not in left_out:
            assert flag in text, (command, flag)


@pytest.mark.parametrize("command", ["demo", "embed", "validate"])
def test_device_flag_everywhere_a_model_runs_here(capsys, command):
    assert "--device" in _help(capsys, command)


def test_hop_is_an_integer_flag_in_every_command():
    for argv in (["embed", "a.wav", "--out", "o"], ["demo"], ["evaluate"], ["sweep"]):
        args = parse([*argv, "--timestamp-hop-ms", "80"])
        assert args.timestamp_hop_ms == 80 and isinstance(args.timestamp_hop_ms, int), argv


def test_flags_override_the_json_and_only_given_flags_are_passed():
    parser = argparse.ArgumentParser()
    add_model_options(parser)
    args = parser.parse_args(["--model-options", '{"layer": 1, "window_overlap": 0.5}', "--layer", "2",
                              "--no-cpu-packed-weights"])  # fmt: skip
    assert model_options(args) == {"layer": 2, "window_overlap": 0.5, "cpu_packed_weights": False}
    assert model_options(parser.parse_args([])) == {}
    with pytest.raises(ValueError, match="JSON object"):
        model_options(parser.parse_args(["--model-options", "[1]"]))


@pytest.mark.parametrize("argv", [["make-tasks", "OUT"], ["weights", "export", "IN", "OUT.safetensors"]])
def test_force_is_a_hidden_alias_of_overwrite_that_says_the_new_name(capsys, argv):
    args = parse([*argv, "--force"])
    assert args.overwrite is True
    assert "--force is now --overwrite" in capsys.readouterr().err
    assert parse(argv).overwrite is False
    help_text = _help(capsys, *argv[:-1] if argv[0] == "weights" else argv[:1])
    assert "--overwrite" in help_text and "--force" not in help_text


def test_make_tasks_force_still_replaces(tmp_path, capsys):
    out = tmp_path / "tasks"
    assert main(["make-tasks", str(out), "--task", "synth_scene_multiclass"]) == 0
    assert main(["make-tasks", str(out), "--task", "synth_scene_multiclass", "--force"]) == 0
    assert "--force is now --overwrite" in capsys.readouterr().err


def test_demo_takes_every_model_option(capsys):
    code = main(["demo", "--weights", str(TINY_UNTRAINED), "--seconds", "1", "--device", "cpu",
                 "--precision", "bf16", "--window-seconds", "0.96", "--max-windows", "2"])  # fmt: skip
    assert code == 0
    assert "windows:     0.96 s" in capsys.readouterr().out


def test_every_subcommand_builds():
    assert isinstance(build_parser(), argparse.ArgumentParser)
