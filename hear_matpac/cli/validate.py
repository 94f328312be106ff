"""`hear-matpac validate`: run the HEAR team's hear-validator on hear_matpac, unmodified."""
from __future__ import annotations

import argparse

from ..weights.locate import best_available_weights, weights_help
from .flags import add_device, add_tensorflow, add_weights


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Run hear-validator (hearvalidator 2021.0.6, unmodified) on hear_matpac. "
        "Weights: " + weights_help(fallback=True) + ". Needs `hear-matpac install-hear-tools` first.")
    add_weights(parser, fallback=True)
    add_device(parser)
    add_tensorflow(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..api import resolve_device
    from ..hear_tools.launch import run_validator

    device = None if args.device == "auto" else str(resolve_device(args.device))  # one-line error first
    return run_validator(str(best_available_weights(args.weights)), device, args.tensorflow)
