"""`hear-matpac compare`: a tasks x models table (markdown, CSV) and chart (PNG) of heareval runs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..io import MissingFile
from ..reports.chart import require_matplotlib
from ..reports.results import SCORES_FILE, find_scores
from ..reports.summary import write_comparison


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Collect every heareval result (embeddings/<model>/<task>/" + SCORES_FILE + ") under "
            "the RUN directories and tabulate each task's primary test score per model: the first "
            "metric of the task's evaluation list, mean +- std over folds for k-fold tasks. The "
            "best score per task is marked (lowest for segment_1s_er). Models are named by their "
            "directory (module name plus heareval's --model-options suffix, e.g. hear_matpac-layer=5). "
            "Writes OUT/NAME.md, OUT/NAME.csv and OUT/NAME.png, and prints the markdown table.")
    parser.add_argument(
        "runs", nargs="+", type=Path, metavar="RUN",
        help="heareval result directory at any level (e.g. embeddings/, embeddings/<model>/), or a scores file",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("."), metavar="DIR", help="output directory (default: .)")
    parser.add_argument("--name", default="comparison", help="file name stem of the outputs (default: comparison)")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart (no matplotlib needed)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.no_chart:
        require_matplotlib()
    scores, warnings = find_scores(args.runs)
    for warning in warnings:
        print(f"hear-matpac compare: warning: {warning}", file=sys.stderr)
    if not scores:
        raise MissingFile(f"no readable {SCORES_FILE} under {', '.join(map(str, args.runs))}; "
                          "run heareval.predictions.runner first")  # fmt: skip
    markdown, written, size = write_comparison(scores, args.out, args.name, chart=not args.no_chart)
    print(markdown, end="")
    print(f"\n{size}; wrote {', '.join(map(str, written))}")
    return 0
