"""`hear_matpac.io`: the process's umask is never changed, strict JSON is all or nothing, and
the version has one home."""
from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path

import pytest

import hear_matpac
from hear_matpac import io


def test_writing_a_file_never_sets_the_umask(tmp_path, monkeypatch):
    """A thread starting a tool while another writes must never see umask 0 (files made
    world-writable): a write reads the umask read at import and never calls os.umask."""

    def no_umask(_mask):
        raise AssertionError("os.umask called: the process's umask changed during a write")

    monkeypatch.setattr(os, "umask", no_umask)
    with io.atomic_write(tmp_path / "a.bin") as handle:
        handle.write(b"x")
    io.write_json(tmp_path / "b.json", {"a": 1})
    mode = stat.S_IMODE((tmp_path / "a.bin").stat().st_mode)
    assert mode == 0o666 & ~io.current_umask()


def test_the_umask_read_is_the_process_umask():
    mask = os.umask(0o022)
    os.umask(mask)
    assert io.current_umask() == mask


def test_write_json_refuses_nan_and_writes_nothing(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"old": true}')
    with pytest.raises(ValueError):
        io.write_json(path, {"score": math.nan})
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temporary file left


def test_user_errors_keep_the_api_contract():
    assert issubclass(io.InputError, ValueError) and issubclass(io.InputError, io.UserError)
    assert issubclass(io.InputTypeError, TypeError) and issubclass(io.MissingFile, FileNotFoundError)
    assert io.first_line(ValueError("one\ntwo")) == "one" and io.first_line(ValueError()) == "ValueError"


def test_the_version_has_one_home():
    setup = (Path(hear_matpac.__file__).resolve().parents[1] / "setup.py").read_text()
    assert '__version__' in setup and not re.search(r'version="\d', setup)
    from hear_matpac.version import __version__

    assert hear_matpac.__version__ == __version__
