"""`hear-matpac evaluate`: the main job. hear-validator, then heareval's embedding and
predictions runners on the synthetic task suite; prints the stages' wall times and scores."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..hear_tools.pipeline import StageFailed, evaluate
from ..reports.results import format_scores, score_json
from ..reports.tables import write_text
from ..weights.locate import best_available_weights, tiny_untrained_warning, weights_help
from .flags import add_grid, add_model_options, add_tensorflow, add_weights, model_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="validator + heareval (embed, predict) on the synthetic tasks; prints scores",
        description="The HEAR tools end to end on hear_matpac: write the synthetic task suite, "
        "run hear-validator, heareval's embedding runner and its predictions runner, and print "
        "each stage's wall time and the test scores. Weights: " + weights_help(fallback=True)
        + " (its scores mean nothing). Needs `hear-matpac install-hear-tools` first.",
    )
    add_weights(parser, fallback=True)
    parser.add_argument("--out", default="hear-runs", help="output folder (default hear-runs)")
    add_grid(parser)
    parser.add_argument("--scale", type=int, default=1, help="multiply clips per split (default 1)")
    add_model_options(parser)
    add_tensorflow(parser)
    parser.add_argument("--keep-logs", action="store_true", help="keep heareval's logs/ under --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    weights = best_available_weights(args.weights)
    print(f"weights: {weights}")
    try:
        stages, scores = evaluate(
            weights, args.out, args.grid, args.grid_points, args.scale, args.tensorflow,
            json.dumps(model_options(args)), args.keep_logs,
        )  # fmt: skip
    except StageFailed as err:
        print(f"hear-matpac evaluate: {err}", file=sys.stderr)
        return 1
    print("\nwall time per stage")
    for stage in stages:
        print(f"  {stage.name:<11} {stage.seconds:8.1f} s")
    print(f"  {'total':<11} {sum(s.seconds for s in stages):8.1f} s")
    print(f"\ntest scores (heareval, grid {args.grid}, {args.grid_points} grid points)")
    print(format_scores(scores))
    summary = {"weights": str(weights), "stages": {s.name: s.seconds for s in stages},
               "scores": [score_json(s) for s in scores]}
    write_text(Path(args.out) / "summary.json", json.dumps(summary, indent=2))
    tiny_untrained_warning(weights)
    return 0 if all(s.finite for s in scores) else 1
