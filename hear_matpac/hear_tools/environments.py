"""Other environments' interpreters (`evaluate --python MODULE=PATH`): how a HEAR tool is
started with one, and what identifies one.

Such an interpreter runs `foreign_launcher.py` (a self-contained script) for a model's
hear-validator and embedding runner; predictions and the table stay in this process's
environment. It runs with its own environment: this process's `PYTHONPATH` and `PYTHONHOME`
are not passed on (they describe ours), for the probe and the tools alike.
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional
from ..io import InputError


LAUNCHER = Path(__file__).resolve().with_name("foreign_launcher.py")
NOT_PASSED_ON = ("PYTHONPATH", "PYTHONHOME")
PROBE_SECONDS = 600


@dataclass(frozen=True)
class Environment:
    """An interpreter as given (absolute, symlinks kept: a venv's `bin/python` is one), its
    Python version and its packages' versions: what a model's key covers."""

    python: str
    version: str
    packages: Dict[str, str] = field(default_factory=dict)

    def identity(self) -> Dict[str, object]:
        return {"python": self.python, "version": self.version, "packages": sorted(self.packages.items())}


def interpreter_path(python: str) -> str:
    """`python` made absolute without resolving symlinks (a venv's interpreter is a link to
    its base, and the link is what selects the venv)."""
    return os.path.abspath(os.path.expanduser(python))


def launcher_command(python: str) -> List[str]:
    """The command line start that runs `foreign_launcher.py` with `python`."""
    return [interpreter_path(python), str(LAUNCHER)]


def launcher_env(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """This process's environment with `extra` on top, less what describes our own Python."""
    env = {k: v for k, v in os.environ.items() if k not in NOT_PASSED_ON}
    env.update(extra or {})
    return env


def probe(python: str, module: str) -> Environment:
    """Run the interpreter once: can it import `module` and the HEAR tools, and what is it?
    `ValueError` in one line (the interpreter and the error) when it cannot."""
    path = interpreter_path(python)
    if not os.path.isfile(path):
        raise InputError(f"interpreter {path} not found")
    try:
        done = subprocess.run([*launcher_command(path), "probe", module], capture_output=True, text=True,
                              env=launcher_env(), timeout=PROBE_SECONDS, stdin=subprocess.DEVNULL)  # fmt: skip
    except OSError as err:
        raise InputError(f"interpreter {path} cannot be run ({err.strerror})") from None
    except subprocess.TimeoutExpired:
        raise InputError(f"interpreter {path} did not import {module} within {PROBE_SECONDS} s") from None
    lines = done.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else None
    except ValueError:
        report = None
    if not isinstance(report, dict):
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise InputError(f"interpreter {path} cannot run the launcher: {why}")
    if report.get("error") or done.returncode:
        raise InputError(f"interpreter {path} cannot import {module}: {report.get('error') or done.returncode}")
    return Environment(path, str(report.get("version", "")), dict(report.get("packages") or {}))
