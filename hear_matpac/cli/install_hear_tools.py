"""`hear-matpac install-hear-tools`: install heareval and hear-validator, pinned, beside
hear_matpac in this Python environment."""
from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Install what heareval 2021.1.3 and hearvalidator 2021.0.6 need (pinned, "
        "requirements-hear.txt + constraints-hear.txt), then the two tools with --no-deps. "
        "Safe to re-run. TensorFlow is not needed: hear-matpac's commands supply a stand-in.")
    parser.add_argument("--tensorflow-cpu", action="store_true", help="also install real TensorFlow (tensorflow-cpu, "
                        "about 1.4 GB; only the tests that compare it with the stand-in need it)")  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hear_tools.install import install

    return install(args.tensorflow_cpu)
