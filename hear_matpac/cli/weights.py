"""`hear-matpac weights list | fetch NAME | export IN OUT`: the published checkpoints."""

from __future__ import annotations

import argparse
import sys

from ..io import first_line
from ..weights.download import DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, DownloadError, fetch
from ..weights.export import export_safetensors
from ..weights.registry import BASE_URL_ENV, REGISTRY, get_entry, markdown_table
from ..weights.locate import WEIGHTS_DIR_ENV, local_copies, resolve_weights_path
from .flags import add_overwrite


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = ("The published MATPAC / MATPAC++ checkpoints: list them, download one "
        "(resumable, checked, sha256 recorded on first download), or export a checkpoint's "
        "encoder to .safetensors.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    # each ACTION names itself as the command, so every error of it reads
    # `hear-matpac weights ACTION: error: ...` (argparse's, the CLI's and its own)

    listing = actions.add_parser("list", help="the published checkpoints and which are downloaded")
    listing.add_argument("--markdown", action="store_true", help="print the registry as a Markdown table")
    listing.set_defaults(func=run_list, command="weights list")

    getter = actions.add_parser(
        "fetch",
        help="download a published checkpoint by name",
        description="Download NAME into DIR (streamed, resumed after an interruption, checked as a "
        "MATPAC checkpoint before it is kept). Its sha256 is recorded beside it (FILE.sha256) on first "
        "download and checked on every later use. A file already there is checked, not fetched again.",
    )
    getter.add_argument("name", choices=list(REGISTRY), metavar="NAME", help=f"one of: {', '.join(REGISTRY)}")
    getter.add_argument("--dir", default=None, help=f"folder to write to (default: ${WEIGHTS_DIR_ENV}, else ./weights)")
    getter.add_argument("--base-url", default=None,
                        help=f"download base URL (default: ${BASE_URL_ENV}, else GitHub releases)")  # fmt: skip
    getter.add_argument("--retries", type=int, default=DEFAULT_RETRIES,
                        help=f"resumes after an interrupted transfer (default {DEFAULT_RETRIES})")  # fmt: skip
    getter.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds without a byte, or under 1 KB/s, before a transfer counts as stalled "
                        f"(default {DEFAULT_TIMEOUT_S:g})")  # fmt: skip
    getter.add_argument("--quiet", action="store_true", help="no progress line")
    getter.set_defaults(func=run_fetch, command="weights fetch")

    exporter = actions.add_parser(
        "export",
        help="write a checkpoint's encoder (and head) to .safetensors",
        description="Write the encoder of IN (a file or a published name), and its AudioSet head "
        "when present, to OUT.safetensors: no pickle, can be memory-mapped when loaded. "
        "Training-only entries are left out.",
    )
    exporter.add_argument("src", metavar="IN", help="checkpoint file or published name")
    exporter.add_argument("out", metavar="OUT", help="output file, ending in .safetensors")
    exporter.add_argument("--encoder-only", action="store_true", help="leave out the classification head")
    add_overwrite(exporter, "replace OUT if it exists")
    exporter.set_defaults(func=run_export, command="weights export")


def run_list(args: argparse.Namespace) -> int:
    print(markdown_table() if args.markdown else local_copies(), end="")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    entry = get_entry(args.name)
    try:
        result = fetch(entry, args.dir, base_url=args.base_url, retries=args.retries, timeout=args.timeout,
                       progress=not args.quiet)  # fmt: skip
    except DownloadError as err:
        print(f"hear-matpac {args.command}: error: {first_line(err)}", file=sys.stderr)
        return 1
    print(result.describe(entry.name))
    return 0


def run_export(args: argparse.Namespace) -> int:
    src = resolve_weights_path(args.src)
    try:
        result = export_safetensors(src, args.out, include_head=not args.encoder_only, overwrite=args.overwrite)
    except FileExistsError as err:
        print(f"hear-matpac {args.command}: error: {first_line(err)}", file=sys.stderr)
        return 2
    print(result.describe())
    return 0
