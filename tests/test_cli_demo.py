"""`hear-matpac demo` runs end to end and reports bad arguments in one line."""
from __future__ import annotations

import pytest

from hear_matpac.cli import main
from conftest import TINY_FLAT


def test_demo_prints_shapes(capsys):
    assert main(["demo", "--weights", str(TINY_FLAT), "--seconds", "4"]) == 0
    out = capsys.readouterr().out
    assert "(1, 25, 960) embeddings" in out and "last 3927.5 ms" in out and "scene:       (1, 960)" in out


def test_demo_falls_back_to_tiny_with_a_warning(capsys, no_weights_found):
    assert main(["demo", "--seconds", "1"]) == 0
    captured = capsys.readouterr()
    assert "TINY UNTRAINED" in captured.err and "tiny_untrained.pt" in captured.out


def test_demo_bad_argument_is_one_line(capsys):
    assert main(["demo", "--weights", str(TINY_FLAT), "--seconds", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "hear-matpac demo: error: --seconds must be a number of seconds in (0, 3600], got -1.0"


@pytest.mark.parametrize("command", ["demo", "validate", "evaluate", "sweep"])
def test_named_weights_not_fetched_is_an_error_not_the_stand_in(command, capsys, no_weights_found):
    assert main([command, "--weights", "matpac-plus-as"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TINY UNTRAINED" not in err
    assert err.startswith(f"hear-matpac {command}: error: checkpoint 'matpac-plus-as' is not downloaded")
    assert "fetch it with: hear-matpac weights fetch matpac-plus-as" in err


def test_weights_named_by_environment_not_fetched_is_an_error(capsys, monkeypatch, no_weights_found):
    monkeypatch.setenv("HEAR_MATPAC_WEIGHTS", "matpac-plus")
    assert main(["demo", "--seconds", "1"]) == 2
    err = capsys.readouterr().err
    assert "'matpac-plus' (named by $HEAR_MATPAC_WEIGHTS) is not downloaded" in err
    assert "hear-matpac weights fetch matpac-plus" in err and "TINY" not in err


@pytest.mark.parametrize("command", ["demo", "validate"])
def test_mistyped_weights_file_is_an_error(command, capsys, no_weights_found):
    assert main([command, "--weights", "wieghts/matpac_10_2048.pt"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "wieghts/matpac_10_2048.pt: no such checkpoint file, nor a published checkpoint's name" in err


def test_demo_usage_error_with_the_stand_in_is_one_line_and_no_banner(capsys, no_weights_found):
    """The stand-in's 4-line banner is printed only once the options have been checked."""
    assert main(["demo", "--layer", "7"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hear-matpac demo: error: ") and "TINY" not in err


@pytest.mark.parametrize("hop", ["160", "40"])
def test_demo_says_how_many_encoder_passes_it_made(hop, capsys, monkeypatch):
    """The passes counted where they are planned (each `plan_windows` call plans `passes`)."""
    import hear_matpac.model as model_module

    planned = []
    real = model_module.plan_windows

    def counting(*args, **kwargs):
        planned.append(kwargs.get("passes", 1))
        return real(*args, **kwargs)

    monkeypatch.setattr(model_module, "plan_windows", counting)
    assert main(["demo", "--weights", str(TINY_FLAT), "--seconds", "2", "--timestamp-hop-ms", hop]) == 0
    out = capsys.readouterr().out
    n = sum(planned)
    assert (n == 1) == (hop == "160")
    said = "one encoder pass" if n == 1 else f"{n} encoder passes"
    assert said in out.splitlines()[-1]
