"""`hear-matpac info CKPT`: what a checkpoint file holds."""

from __future__ import annotations

import argparse
import json


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Read CKPT exactly as load_model would (checked, sha256 verified when recorded) "
        "and print what it holds.")
    parser.add_argument("ckpt", metavar="CKPT", help="checkpoint file (.pt or .safetensors) or published name")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..weights.info import describe, format_info
    from ..weights.locate import resolve_weights_path

    info = describe(resolve_weights_path(args.ckpt))
    print(json.dumps(info.as_dict(), indent=1) if args.json else format_info(info))
    return 0
