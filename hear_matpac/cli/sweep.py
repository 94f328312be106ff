"""`hear-matpac sweep`: heareval's runners once per window length (temporal support); writes
a table (markdown, CSV) and a plot of each task's primary score and the encoding cost."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..io import InputError
from ..evaluate.stages import StageFailed
from ..evaluate.sweep import parse_window_seconds, run_sweep, write_outputs
from ..reports.chart import require_matplotlib
from ..weights.locate import best_available_weights, tiny_untrained_warning
from ..evaluate.task_folders import parse_task_names
from .flags import add_grid, add_model_options, add_tasks, add_tensorflow, add_weights, model_options

DEFAULT_WINDOWS = "0.96,1.92,3.04,6.08"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="heareval (embed, predict) once per window_seconds; table + plot of scores and cost",
        description="For each window length, run heareval's embedding runner (with "
        '--model-options \'{"window_seconds": S}\') and its predictions runner on the same tasks, '
        "and measure the encoding cost (audio-seconds per second, peak memory of the embedding "
        "process). Writes sweep.md, sweep.csv, sweep.json and sweep.png to --out, and its "
        "embeddings, logs and synthetic tasks to OUT/sweep/, which the next sweep replaces; "
        "nothing else in --out is touched. Tasks: "
        "--tasks-dir, else the synthetic suite; --tasks picks some. Needs "
        "`hear-matpac install-hear-tools` first.",
    )
    parser.add_argument("--window-seconds", default=DEFAULT_WINDOWS,  # fmt: skip
                        help=f"window lengths in seconds, comma-separated (default {DEFAULT_WINDOWS})")
    add_weights(parser, fallback=True)
    parser.add_argument("--tasks-dir", default="", help="folder of HEAR tasks (default: generate the synthetic suite)")
    add_tasks(parser)
    parser.add_argument("--out", default="sweep-runs", help="output folder (default sweep-runs)")
    add_grid(parser)
    add_model_options(parser, exclude=("window_seconds",))  # the swept option: --window-seconds LIST
    add_tensorflow(parser)
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG plot (no matplotlib needed)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    weights = best_available_weights(args.weights)
    windows = parse_window_seconds(args.window_seconds, weights)
    if not args.no_chart:
        require_matplotlib()
    print(f"weights: {weights}")
    base = model_options(args)
    if "window_seconds" in base:
        raise InputError("--model-options: window_seconds is what sweep varies; give the lengths with --window-seconds")
    settings = [(f"{w:g}", {**base, "window_seconds": w}) for w in windows]
    tasks = parse_task_names(args.tasks)
    try:
        rows = run_sweep(weights, Path(args.out), settings, Path(args.tasks_dir) if args.tasks_dir else None,
                         tasks=tasks, grid=args.grid, grid_points=args.grid_points,
                         tensorflow=args.tensorflow)  # fmt: skip
    except StageFailed as err:
        print(f"hear-matpac sweep: {err}", file=sys.stderr)
        return 1
    written = write_outputs(rows, Path(args.out), setting_header="window_seconds", plot=not args.no_chart)
    print()
    print(written[0].read_text(), end="")
    print("\nwrote " + ", ".join(map(str, written)))
    tiny_untrained_warning(weights)
    return 0  # every stage ran: non-finite scores (e.g. d_prime inf) are results, not failures
