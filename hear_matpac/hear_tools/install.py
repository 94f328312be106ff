"""The one pinned way to install the HEAR tools beside hear_matpac, as pip commands.

Two steps, both idempotent (pip skips what is already installed at the pinned version):
1. `pip install -r requirements-hear.txt -c constraints-hear.txt` (what the tools import,
   plus `tensorflow-cpu` if asked);
2. `pip install --no-deps --ignore-requires-python -r requirements-hear-nodeps.txt`
   (heareval and hearvalidator themselves, whose declared pins cannot install on 3.11).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements-hear.txt"
CONSTRAINTS = HERE / "constraints-hear.txt"
NO_DEPS = HERE / "requirements-hear-nodeps.txt"
TENSORFLOW_CPU = "tensorflow-cpu"  # version pinned in CONSTRAINTS


def install_commands(tensorflow_cpu: bool = False, python: str = sys.executable) -> List[List[str]]:
    """The pip command lines, in order. `tensorflow_cpu`: also install real TensorFlow (CPU
    build, a large download), which hear_matpac itself never needs."""
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    first = pip + ["-r", str(REQUIREMENTS), "-c", str(CONSTRAINTS)]
    if tensorflow_cpu:
        first.append(TENSORFLOW_CPU)
    return [first, pip + ["--no-deps", "--ignore-requires-python", "-r", str(NO_DEPS)]]


def install(tensorflow_cpu: bool = False) -> int:
    """Run `install_commands` with this Python; 0 on success, else pip's exit status."""
    for command in install_commands(tensorflow_cpu):
        print("+ " + " ".join(command), flush=True)
        status = subprocess.call(command)
        if status:
            print(f"hear-matpac: pip failed ({status}); nothing else was run", file=sys.stderr)
            return status
    return 0
