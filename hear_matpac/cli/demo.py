"""`hear-matpac demo`: embed a synthetic clip and print what came out (`reports.demo`)."""
from __future__ import annotations

import argparse

from ..weights.locate import weights_help
from .flags import add_device, add_model_options, add_weights, model_options


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Embed a synthetic clip (a chirp over noise) and print shapes, timestamps "
        "and timing. Weights: " + weights_help(fallback=True) + ".")
    add_weights(parser, fallback=True)
    parser.add_argument("--seconds", type=float, default=4.0, help="clip length (default 4.0)")
    add_device(parser)
    add_model_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..reports.demo import demo

    print("\n".join(demo(args.weights, args.seconds, args.device, model_options(args))))
    return 0
