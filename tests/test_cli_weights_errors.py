"""Every `hear-matpac weights SUB` error is one line with the one prefix
`hear-matpac weights SUB: error: ...` (a usage error exits 2; a failed download exits 1)."""
from __future__ import annotations

from pathlib import Path

import pytest

from hear_matpac.cli import main
from conftest import TINY_FLAT


def _cases(tmp: Path):
    a_file = tmp / "a-file"
    a_file.write_bytes(b"")
    out = tmp / "out.safetensors"
    out.write_bytes(b"taken")
    unreachable = ["--base-url", "http://127.0.0.1:9", "--retries", "0", "--timeout", "2"]
    return [  # (SUB, its arguments, exit status, what the message says)
        ("fetch", ["matpac", "--dir", str(a_file), *unreachable], 2, "is not a folder"),
        ("fetch", ["matpac", "--dir", str(tmp / "w"), "--retries", "-1"], 2, "retries must be 0 or more"),
        ("fetch", ["matpac", "--dir", str(tmp / "w"), *unreachable], 1, "could not reach 127.0.0.1:9"),
        ("fetch", ["no-such-name"], 2, "invalid choice"),
        ("export", [str(tmp / "missing.pt"), str(tmp / "x.safetensors")], 2, "no such checkpoint file"),
        ("export", [str(TINY_FLAT), str(tmp / "x.bin")], 2, "must end in .safetensors"),
        ("export", [str(a_file), str(tmp / "x.safetensors")], 2, "not a PyTorch checkpoint"),
        ("export", [str(TINY_FLAT), str(out)], 2, "exists"),
        ("list", ["--markdown=x"], 2, "ignored explicit argument"),
    ]


@pytest.mark.parametrize("case", range(9))
def test_each_weights_subcommand_says_its_own_name(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sub, arguments, status, says = _cases(tmp_path)[case]
    try:
        code = main(["weights", sub, *arguments])
    except SystemExit as stop:  # argparse's own usage errors
        code = stop.code
    assert code == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"hear-matpac weights {sub}: error: ") and says in err, err
