"""`hear-matpac model-env DIR REQUIREMENT...`: a venv for one HEAR plugin, to run it with
`evaluate --python MODULE=PATH`."""
from __future__ import annotations

import argparse
import sys


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Create the venv DIR (or add to it) for one HEAR plugin: pip installs the REQUIREMENTs "
        "(pip's syntax) together with what heareval's embedding runner and hear-validator import (pinned), "
        "then the two tools with --no-deps; neither hear_matpac nor TensorFlow is needed there. Then checks "
        "that the new interpreter imports the module and prints the flag for `evaluate`: "
        "--python MODULE=DIR/bin/python.")
    parser.add_argument("dir", metavar="DIR", help="the venv's folder (new, empty, or a venv to add to)")
    parser.add_argument("requirements", metavar="REQUIREMENT", nargs="*",
                        help="the plugin and its pins, e.g. librosa==0.9.2 resampy (with --no-deps hearbaseline==2021.1.1)")  # fmt: skip
    parser.add_argument("--python", default=sys.executable, metavar="BASE",
                        help="the interpreter the venv is made from (default: this one)")  # fmt: skip
    parser.add_argument("--module", default="", help="the plugin's module (default: the name of the first --no-deps or REQUIREMENT)")
    parser.add_argument("--no-deps", action="append", default=[], metavar="REQUIREMENT",
                        help="install this one without its declared dependencies (repeatable), as the HEAR "
                        "tools are: for a plugin whose own pins cannot install, e.g. hearbaseline==2021.1.1")  # fmt: skip
    parser.add_argument("--share", action="store_true",
                        help="let the venv see this environment's packages after its own (a .pth file): pip "
                        "installs only what the plugin needs in other versions (no second torch)")  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hear_tools.model_env import guess_module, make_model_env

    try:
        env = make_model_env(args.dir, args.requirements, args.python, args.module, args.share, args.no_deps)
    except RuntimeError as err:
        print(f"hear-matpac model-env: {err}", file=sys.stderr)
        return 1
    module = args.module or guess_module([*args.no_deps, *args.requirements])
    print(f"\n{module} imports in {env.python} (Python {env.version}). Evaluate it with:\n"
          f"  --python {module}={env.python}")  # fmt: skip
    return 0
