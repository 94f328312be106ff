"""`hear-matpac demo` runs end to end and reports bad arguments in one line."""
from __future__ import annotations

from hear_matpac.cli import main
from conftest import TINY_FLAT


def test_demo_prints_shapes(capsys):
    assert main(["demo", "--weights", str(TINY_FLAT), "--seconds", "4"]) == 0
    out = capsys.readouterr().out
    assert "(1, 25, 960) embeddings" in out and "last 3927.5 ms" in out and "scene:       (1, 960)" in out


def test_demo_falls_back_to_tiny_with_a_warning(capsys, monkeypatch, tmp_path):
    from hear_matpac import checkpoint

    monkeypatch.delenv("HEAR_MATPAC_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(checkpoint, "repo_weights_dir", lambda: tmp_path)
    assert main(["demo", "--seconds", "1"]) == 0
    captured = capsys.readouterr()
    assert "TINY UNTRAINED" in captured.err and "tiny_untrained.pt" in captured.out


def test_demo_bad_argument_is_one_line(capsys):
    assert main(["demo", "--weights", str(TINY_FLAT), "--seconds", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "hear-matpac demo: error: --seconds must be a number of seconds in (0, 3600], got -1.0"
