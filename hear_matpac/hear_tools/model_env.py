"""`hear-matpac model-env`: a venv for one HEAR plugin, holding its requirements and what the
HEAR tools' embedding side imports (pinned), to run it with `evaluate --python MODULE=PATH`.

Three steps: `BASE -m venv DIR`; `DIR/bin/python -m pip install REQUIREMENT... -r
requirements-hear-embed.txt` (one resolve, so the plugin's own pins and the tools' meet); the
HEAR tools with `--no-deps` (requirements-hear-nodeps.txt). Then the new interpreter is probed
(`environments.probe`): it must import the module and the HEAR tools.

`share`: a `.pth` file lets the venv see this environment's site-packages *after* its own, so
pip installs only what the plugin needs in other versions (and no second torch); pip leaves
the shared packages alone (they are outside the venv). Such a venv has no pip of its own: the
shared pip installs into it.
"""
from __future__ import annotations

import os
import re
import site
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Sequence

from ..io import InputError
from .environments import Environment, interpreter_path, probe
from .install import NO_DEPS

EMBED_REQUIREMENTS = Path(__file__).resolve().with_name("requirements-hear-embed.txt")
SHARE_FILE = "hear-matpac-shared.pth"


def guess_module(requirements: Sequence[str]) -> str:
    """The module named by the first requirement (`hear-baseline==1` -> `hear_baseline`);
    `ValueError` when it is a path or URL, which names no module."""
    first = str(requirements[0]).strip() if requirements else ""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", first)
    if not match or "/" in first or first.endswith((".whl", ".zip", ".tar.gz")):
        raise InputError(f"cannot tell the module from {first!r}: name it with --module")
    return re.sub(r"[-.]+", "_", match.group(0)).lower()


def venv_python(folder: Path) -> Path:
    return Path(interpreter_path(str(folder))) / "bin" / "python"


def env_commands(folder: Path, requirements: Sequence[str], base: str, share: bool = False,
                 no_deps: Sequence[str] = ()) -> List[List[str]]:
    """The command lines, in order: make the venv, install the plugin with the tools' imports,
    install the tools (and `no_deps`: requirements whose declared dependencies cannot install,
    as the tools' own cannot). `share`: the venv gets no pip or setuptools of its own (they would
    shadow the shared ones: pip comes from there, and torch's setuptools pin is met there)."""
    python = str(venv_python(folder))
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    return [[base, "-m", "venv", *(["--without-pip"] if share else []), str(folder)],
            pip + [*requirements, "-r", str(EMBED_REQUIREMENTS)],
            pip + ["--no-deps", "--ignore-requires-python", "-r", str(NO_DEPS), *no_deps]]  # fmt: skip


def our_site_dirs() -> List[str]:
    """This environment's site-packages folders, in import order."""
    dirs = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]
    dirs += [p for p in site.getsitepackages() if p not in dirs and Path(p).is_dir()]
    return dirs


def _check_folder(folder: Path) -> None:
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise InputError(f"{folder} is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / "pyvenv.cfg").is_file():
        raise InputError(f"{folder} exists and is not a venv; it is left alone: choose another DIR")


def make_model_env(folder: Path, requirements: Sequence[str], base: str = sys.executable, module: str = "",
                   share: bool = False, no_deps: Sequence[str] = (),
                   call: Callable[[List[str]], int] = subprocess.call) -> Environment:  # fmt: skip
    """Make (or add to) the venv `folder` for the plugin `module` (default: from the first
    of `no_deps` + `requirements`) and return its probed environment. `ValueError` for bad input or an
    interpreter that then cannot import the module; `RuntimeError` when a step fails."""
    if not requirements and not no_deps:
        raise InputError("name the plugin's requirements (pip's syntax), e.g. hearbaseline==2021.1.1")
    module = module or guess_module([*no_deps, *requirements])
    if not re.fullmatch(r"[A-Za-z_][\w.]*", module):
        raise InputError(f"--module {module!r} is not a module name")
    base_path = interpreter_path(base)
    if not os.path.isfile(base_path):
        raise InputError(f"--python {base_path}: interpreter not found")
    folder = Path(folder).absolute()
    _check_folder(folder)
    make, install_plugin, install_tools = env_commands(folder, requirements, base_path, share, no_deps)
    steps = [install_plugin, install_tools] if (folder / "pyvenv.cfg").is_file() else [make, install_plugin, install_tools]
    for command in steps:
        print("+ " + " ".join(command), flush=True)
        status = call(command)
        if status:
            raise RuntimeError(f"{'venv' if command is make else 'pip'} failed (exit {status}); "
                               f"{folder} is left as it is")  # fmt: skip
        if command is make and share:
            version = f"python{sys.version_info.major}.{sys.version_info.minor}"
            target = folder / "lib" / version / "site-packages" / SHARE_FILE
            if not target.parent.is_dir():
                raise InputError(f"--share: {folder} is not a Python {version[6:]} venv, so it cannot share this one's packages")
            target.write_text("".join(f"{p}\n" for p in our_site_dirs()))
    return probe(str(venv_python(folder)), module)
