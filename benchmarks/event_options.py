"""Event scores and encoding cost of the timestamp options, measured through heareval.

Runs heareval's embedding and predictions runners (via `hear_matpac.evaluate.sweep`: `evaluate` in OUT/sweep, resumable) on the
generated event task `synth_events` once per setting of `timestamp_hop_ms`, `window_overlap`
(and `window_seconds`: the task's 3 s clips fit in one 6.08 s window, where overlap changes
nothing, so overlap is measured with 1.92 s windows), and prints onset F-measure at 200 ms and
50 ms, segment error rate at 1 s, and the cost of each embedding stage. Writes
event_options.{md,csv,json,png} to --out. Needs `hear-matpac install-hear-tools`.

    python benchmarks/event_options.py                     # tiny untrained checkpoint
    python benchmarks/event_options.py --weights W --scale 4 --grid-points 8
"""
from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from hear_matpac.evaluate.sweep import options_label, sweep_settings
from hear_matpac.reports.sweep import write_outputs
from hear_matpac.weights.locate import TINY_UNTRAINED, best_available_weights

SETTINGS = [
    {},
    {"timestamp_hop_ms": 40},
    {"window_seconds": 1.92},
    {"window_seconds": 1.92, "timestamp_hop_ms": 40},
    {"window_seconds": 1.92, "window_overlap": 0.5},
    {"window_seconds": 1.92, "timestamp_hop_ms": 40, "window_overlap": 0.5},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(TINY_UNTRAINED), help="checkpoint (default: tiny untrained)")
    parser.add_argument("--out", default="event-options-runs", help="output folder")
    parser.add_argument("--grid-points", type=int, default=8, help="heareval grid points (grid faster)")
    parser.add_argument("--scale", type=int, default=1, help="multiply the task's clips per split (default 1: 12/6/6)")
    args = parser.parse_args()
    weights = best_available_weights(args.weights)
    settings = [(options_label(s), s) for s in SETTINGS]
    _, rows = sweep_settings(weights, Path(args.out), settings, tasks=["synth_events"], scale=args.scale, grid="faster",
                             grid_points=args.grid_points, tensorflow="stand-in")  # fmt: skip
    written = write_outputs(rows, Path(args.out), stem="event_options", setting_header="options", all_metrics=True)
    print(f"\nweights {weights}; {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}\n")  # fmt: skip
    print(written[0].read_text(), end="")
    print("\nwrote " + ", ".join(map(str, written)))


if __name__ == "__main__":
    main()
