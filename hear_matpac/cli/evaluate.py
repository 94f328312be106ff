"""`hear-matpac evaluate`: the benchmark harness. hear-validator once per model, then
heareval's embedding and predictions runners per (model, task) stage, resumable; ends with
the comparison table over all models and `summary.json`."""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ..evaluate.run import evaluate, report
from ..evaluate.specs import models_from_flags
from ..evaluate.task_folders import parse_task_names
from ..hear_tools.launch import PLUGIN_MODULE, exit_on_sigterm
from ..reports.chart import require_matplotlib
from ..weights.locate import tiny_untrained_warning, weights_help
from .flags import (add_devices, add_engine, add_grid, add_model_options, add_overwrite, add_tasks, add_tensorflow,
                    add_weights, devices, engine_options, model_options)


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = ("The HEAR tools end to end: for each --model, hear-validator once, then "
        "heareval's embedding and predictions runners on each task of --tasks-dir (default: the "
        "synthetic suite, written to OUT/tasks). A stage already complete in --out is skipped, so "
        "the same command resumes a killed run; --overwrite redoes everything. Ends with "
        "OUT/comparison.{md,csv,png} and OUT/summary.json, both of this run's stages only. Exit 0 "
        "when every stage ran or was complete already; 1 when one failed (its log is named; the "
        "other stages go on) or was left to another run holding its claim (named). Stages run on every visible GPU "
        "(--devices, --jobs per device), longest task first, each in its own processes. Without --model: hear_matpac with --weights and the "
        "model option flags. Weights: " + weights_help(fallback=True)
        + " (its scores mean nothing). Needs `hear-matpac install-hear-tools` first.")
    parser.add_argument("--model", action="append", default=[], metavar="SPEC",
                        help="MODULE[:WEIGHTS[:OPTIONS_JSON]] (repeatable), e.g. "
                        "'hear_matpac:weights/matpac_10_2048.pt:{\"layer\": 6}' or hearbaseline")  # fmt: skip
    parser.add_argument("--python", action="append", default=[], metavar="MODULE=PATH",
                        help="run MODULE's hear-validator and embedding runner with the interpreter PATH of "
                        "another environment (repeatable; make one with `hear-matpac model-env`); predictions "
                        "stay here")  # fmt: skip
    parser.add_argument("--models-file", default="", metavar="FILE",
                        help="SPECs, one a line (# comments); a line `--python MODULE=PATH` as the flag")  # fmt: skip
    add_weights(parser, fallback=True)
    parser.add_argument("--out", default="hear-runs", help="output folder (default hear-runs)")
    parser.add_argument("--tasks-dir", default="", metavar="T",
                        help="folder of HEAR tasks in hear-preprocess's layout, 16 kHz (default: the synthetic suite)")  # fmt: skip
    add_tasks(parser)
    add_grid(parser)
    parser.add_argument("--scale", type=int, default=1, help="synthetic suite: multiply clips per split (default 1)")
    add_model_options(parser)
    add_tensorflow(parser)
    add_devices(parser)
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep heareval's logs/ (checkpoints per grid point) in each stage folder")  # fmt: skip
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart (no matplotlib needed)")
    add_overwrite(parser, "redo every stage, replacing what earlier runs of hear-matpac wrote")
    add_engine(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, exit_on_sigterm)  # stages stop their tools and release claims
    if not args.no_chart:
        require_matplotlib()
    names = devices(args)
    engine, slurm = engine_options(args)
    models = models_from_flags(args.model, args.models_file, args.python, args.weights, model_options(args))
    for m in models:
        print(m.describe())
    print(f"devices: {', '.join(names)}; {args.jobs} stage(s) at a time on each")
    result = evaluate(
        models, Path(args.out), Path(args.tasks_dir) if args.tasks_dir else None, parse_task_names(args.tasks),
        args.grid, args.grid_points, args.scale, args.tensorflow, args.keep_logs, args.overwrite,
        devices=names, jobs=args.jobs, engine=engine, slurm=slurm,
    )  # fmt: skip
    print(report(result, Path(args.out), args.grid, args.grid_points, chart=not args.no_chart))
    for m in models:
        if m.module == PLUGIN_MODULE:
            tiny_untrained_warning(m.weights)
    for line in result.problems():
        print(f"hear-matpac evaluate: {line}", file=sys.stderr)
    return 1 if result.failed or result.claimed else 0
