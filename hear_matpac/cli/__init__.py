"""`hear-matpac` command line: one module per subcommand, each with `register(subparsers)`."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from . import compare, demo, embed, info, weights

# Each module adds its subcommand and sets `func(args) -> int` as the parser default.
SUBCOMMANDS = (demo, embed, compare, weights, info)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hear-matpac",
        description="MATPAC audio embeddings through the HEAR 2021 API.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"hear-matpac {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
