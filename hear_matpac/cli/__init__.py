"""`hear-matpac` command line: one module per subcommand (its name, `-` as `_`), imported only
when its subcommand runs (`--help` and `info` import no tools, files or reports).

A user's mistake (`hear_matpac.io.is_user_error`: a `UserError`, or an operating-system error
on a path they named) is one line on stderr and exit status 2; any other exception is a bug and
keeps its traceback, exit status `BUG_STATUS`."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import NoReturn, Optional, Sequence

from ..io import is_user_error, one_line
from ..version import __version__

BUG_STATUS = 70  # EX_SOFTWARE (sysexits.h): an internal error; neither 1 (a stage or file failed) nor 2 (usage)

# (name, one-line help), in the order `--help` lists them. The module's `register(parser)` adds
# the description and arguments and sets `func(args) -> int` as a default; one that also sets
# `passthrough=True` gets every argument it does not know, in order, as `args.upstream`.
SUBCOMMANDS = (
    ("demo", "embed a synthetic clip with the best weights available and print the result"),
    ("evaluate", "validator + heareval (embed, predict) per model and task, resumable; comparison table"),
    ("sweep", "heareval (embed, predict) once per window_seconds; table + plot of scores and cost"),
    ("validate", "run hear-validator on hear_matpac (no TensorFlow needed)"),
    ("heareval", "run heareval's embedding or predictions runner (no TensorFlow needed)"),
    ("make-tasks", "write the small synthetic HEAR task suite (16 kHz, hear-preprocess format)"),
    ("install-hear-tools", "pip-install heareval + hear-validator (pinned) into this environment"),
    ("model-env", "make a venv for a HEAR plugin (its requirements + the HEAR tools' embedding side, pinned)"),
    ("embed", "embed audio files (wav, flac, ogg, mp3, ...) into .npy/.npz files"),
    ("compare", "compare heareval results across models: markdown/CSV table and PNG chart"),
    ("weights", "list, download and convert the published MATPAC checkpoints"),
    ("info", "describe a checkpoint: inferred encoder shape, parameters, ignored keys, head"),
)  # fmt: skip


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with its usage errors as one line, like every other `hear-matpac` error
    (`PROG: error: MESSAGE (see PROG --help)`, exit status 2); subparsers inherit it."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser, with `command`'s module imported and registered (every subcommand when None);
    the others are listed by name and help only."""
    parser = OneLineErrorParser(prog="hear-matpac", description="MATPAC audio embeddings through the HEAR 2021 API.")
    parser.add_argument("--version", action="version", version=f"hear-matpac {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help in SUBCOMMANDS:
        sub = subparsers.add_parser(name, help=help)
        if command is None or name == command:
            importlib.import_module(f"{__name__}.{name.replace('-', '_')}").register(sub)
            sub.set_defaults(parser=sub)  # its own usage errors
    return parser


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse `argv`; unknown arguments are an error except for pass-through subcommands."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), "")  # the top level takes no option with a value
    parser = build_parser(command if command in {name for name, _ in SUBCOMMANDS} else "")
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        if "--" in extra:
            extra.remove("--")
        args.upstream = extra
    elif extra:
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
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
    except Exception as err:
        if not is_user_error(err):
            traceback.print_exc()
            print(f"hear-matpac {args.command}: internal error (a bug; please report it with the traceback above)",
                  file=sys.stderr)  # fmt: skip
            return BUG_STATUS
        print(f"hear-matpac {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2
