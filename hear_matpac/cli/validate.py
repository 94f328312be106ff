"""`hear-matpac validate`: run the HEAR team's hear-validator on hear_matpac, unmodified."""
from __future__ import annotations

import argparse

from ..devices import resolve_device
from ..hear_tools.tensorflow_standin import MODES
from ..weights.locate import best_available_weights
from ..weights.locate import weights_help

TENSORFLOW_HELP = (
    "which `tensorflow` the HEAR tool imports: auto (the real one if installed, else "
    "hear_matpac's stand-in), real, or stand-in (default auto)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="run hear-validator on hear_matpac (no TensorFlow needed)",
        description="Run hear-validator (hearvalidator 2021.0.6, unmodified) on hear_matpac. "
        "Weights: " + weights_help(fallback=True) + ". Needs `hear-matpac install-hear-tools` first.",
    )
    parser.add_argument("--weights", default="", help=weights_help(fallback=True))
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    parser.add_argument("--tensorflow", choices=MODES, default="auto", help=TENSORFLOW_HELP)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hear_tools.launch import run_validator

    if args.device is not None:
        resolve_device(args.device)  # a one-line error before hear-validator starts
    return run_validator(str(best_available_weights(args.weights)), args.device, args.tensorflow)
