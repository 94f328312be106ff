"""`hear-matpac` command line: one module per subcommand, each with `register(subparsers)`."""
from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn, Optional, Sequence

from . import (compare, demo, embed, evaluate, heareval, info, install_hear_tools, make_tasks, model_env, sweep, validate,
               weights)

# Each module adds its subcommand and sets `func(args) -> int` as the parser default. A
# subcommand that also sets `passthrough=True` gets every argument it does not know, in order,
# as `args.upstream` (for the HEAR tools' own command lines).
SUBCOMMANDS = (demo, evaluate, sweep, validate, heareval, make_tasks, install_hear_tools, model_env, embed, compare, weights,
               info)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with its usage errors as one line, like every other `hear-matpac` error
    (`PROG: error: MESSAGE (see PROG --help)`, exit status 2); subparsers inherit it."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="hear-matpac",
        description="MATPAC audio embeddings through the HEAR 2021 API.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse `argv`; unknown arguments are an error except for pass-through subcommands."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        if "--" in extra:
            extra.remove("--")
        args.upstream = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # stdout closed early (`... | head -1`): end quietly, as cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
        return 141  # 128 + SIGPIPE, the status of a shell tool killed by it
    except KeyboardInterrupt:  # Ctrl-C: the command has stopped its workers and tools on the way out
        print(f"hear-matpac {args.command}: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports a tool Ctrl-C ended
    except (ValueError, TypeError, OSError) as err:
        print(error_line(args.command, err), file=sys.stderr)
        return 2


def error_line(command: str, err: BaseException) -> str:
    """How `hear-matpac COMMAND` reports a user's mistake: one line."""
    return f"hear-matpac {command}: error: {_one_line(err)}"


def _one_line(err: BaseException) -> str:
    """`err` on one line; an operating-system error as `PATH: reason`."""
    if isinstance(err, OSError) and err.strerror:
        where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
        return f"{where}: {err.strerror}" if where else err.strerror
    return " ".join(line.strip() for line in str(err).strip().splitlines()) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
