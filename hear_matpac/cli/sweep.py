"""`hear-matpac sweep`: `evaluate` once per window length, resumable; table and plot of scores and cost."""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ..evaluate.run import stage_counts
from ..evaluate.sweep import run_sweep
from ..evaluate.task_folders import parse_task_names
from ..hear_tools.launch import exit_on_sigterm
from ..weights.locate import tiny_untrained_warning
from .flags import (add_devices, add_engine, add_grid, add_model_options, add_tasks, add_tensorflow, add_weights,
                    devices, engine_options, model_options)


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = ("`evaluate` of hear_matpac once per window length in OUT/sweep/ (complete stages reused: the same command "
        "resumes, a new length runs only its stages); OUT/sweep.{md,csv,json,png}: scores and encoding cost (a reused "
        "stage's as measured when it ran). Exit codes as evaluate's. Needs `hear-matpac install-hear-tools`.")  # fmt: skip
    parser.add_argument("--window-seconds", default="0.96,1.92,3.04,6.08",
                        help="window lengths in seconds, comma-separated (default %(default)s)")  # fmt: skip
    add_weights(parser, fallback=True)
    parser.add_argument("--tasks-dir", default="", help="folder of HEAR tasks (default: the synthetic suite)")
    parser.add_argument("--out", default="sweep-runs", help="output folder (default sweep-runs)")
    for add in (add_tasks, add_grid, add_tensorflow, add_devices, add_engine):
        add(parser)
    add_model_options(parser, exclude=("window_seconds",))  # the swept option: --window-seconds LIST
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG plot (no matplotlib needed)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, exit_on_sigterm)  # stages stop their tools and release claims
    (engine, slurm), tasks_dir = engine_options(args), Path(args.tasks_dir) if args.tasks_dir else None
    done = run_sweep(args.weights, Path(args.out), args.window_seconds, model_options(args), tasks_dir,
                     parse_task_names(args.tasks), grid=args.grid, grid_points=args.grid_points, tensorflow=args.tensorflow,
                     plot=not args.no_chart, devices=devices(args), jobs=args.jobs, engine=engine, slurm=slurm)  # fmt: skip
    print(f"\n{stage_counts(done.result)}\n\n{done.written[0].read_text()}\nwrote " + ", ".join(map(str, done.written)))
    tiny_untrained_warning(done.weights)
    for o in done.result.failed + done.result.claimed:  # as evaluate: exit 1, each named; non-finite scores are results
        print(f"hear-matpac sweep: {o.model} / {o.task} {o.status}: {o.message} (log {o.log})", file=sys.stderr)
    return 1 if done.result.failed or done.result.claimed else 0
