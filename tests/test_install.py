"""Installing hear-matpac, and the HEAR tools beside it, into an environment that already holds
a torch (CI's venv gets the newest pip picks) leaves that torch alone; torchaudio is no
requirement. Uses pip's own resolver (`--dry-run --report`), so those tests need the package
index: marked `package_index` (registered in conftest.py, run by default and in CI)."""
from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

from hear_matpac.hear_tools.install import install_commands

REPO = Path(__file__).resolve().parents[1]


def _would_install(args: list, tmp_path: Path) -> dict:
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--quiet",
               "--dry-run", "--report", str(report), *args]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, f"pip could not resolve {args}: {result.stderr[-2000:]}"
    installs = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installs}


def test_requirements_do_not_cap_torch_or_need_torchaudio():
    requires = metadata.requires("hear-matpac") or []
    names = [r.split(";")[0].strip() for r in requires if "extra ==" not in r]
    torch_spec = next(r for r in names if r.startswith("torch") and not r.startswith("torchaudio"))
    assert "<" not in torch_spec, f"torch is capped: {torch_spec}"
    assert not any(r.startswith("torchaudio") for r in requires), requires


@pytest.mark.package_index
def test_installing_the_package_keeps_this_torch(tmp_path):
    plan = _would_install(["-e", ".[test]"], tmp_path)
    assert "torch" not in plan and "torchaudio" not in plan, plan
    assert set(plan) <= {"hear-matpac"}, f"would change what this environment holds: {plan}"


@pytest.mark.package_index
def test_installing_the_hear_tools_keeps_this_torch(tmp_path):
    first = install_commands(tensorflow_cpu=False)[0]
    args = first[first.index("install") + 1:]
    args = [a for a in args if a != "--disable-pip-version-check"]
    plan = _would_install(args, tmp_path)
    assert "torch" not in plan and "torchaudio" not in plan, f"torch {torch.__version__} would change: {plan}"
