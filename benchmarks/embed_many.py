"""Wall time of `hear-matpac embed` on many generated files, optionally against another checkout.

Writes N WAV files (noise, 16 kHz unless --rate; lengths fixed or uniform in --min-s..--max-s,
seeded), then times `python -m hear_matpac.cli embed FILES --out NEW_DIR` in a fresh process for
this checkout and for each --compare-with checkout (a folder holding another version's
`hear_matpac/`), alternating them round by round so that the machine's noise hits both alike.
Also times a second run into the same folder (everything skipped). Prints medians, minima and
each ratio to this checkout.

    python benchmarks/embed_many.py --files 100 --seconds 1 [--compare-with ../old] [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder, for _common (see its docstring)
from _common import timed_run, write_noise_files  # noqa: E402


def timed_embed(checkout: Path, files: list, out: Path, extra: list) -> float:
    command = [sys.executable, "-m", "hear_matpac.cli", "embed", *files, "--out", str(out), "--quiet", *extra]
    return timed_run(command, dict(os.environ, PYTHONPATH=str(checkout)), checkout, f"embed in {checkout}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of every file (unless --min-s/--max-s)")
    parser.add_argument("--min-s", type=float)
    parser.add_argument("--max-s", type=float)
    parser.add_argument("--rate", type=int, default=16000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--weights", default=str(HERE / "hear_matpac" / "assets" / "tiny_untrained.pt"))
    parser.add_argument("--compare-with", type=Path, action="append", default=[], metavar="CHECKOUT")
    parser.add_argument("--timestamps", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    if args.min_s is not None and args.max_s is not None:
        lengths = rng.uniform(args.min_s, args.max_s, args.files)
    else:
        lengths = np.full(args.files, args.seconds)
    checkouts = [HERE, *[c.resolve() for c in args.compare_with]]
    extra = ["--weights", args.weights] + (["--timestamps"] if args.timestamps else [])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"{args.files} files, {lengths.sum():.0f} audio-s in all, {args.rounds} rounds")  # fmt: skip
    fresh = {c: [] for c in checkouts}
    again = {c: [] for c in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        files = write_noise_files(Path(tmp), lengths[:args.files], args.rate)
        for r in range(args.rounds):
            for checkout in checkouts if r % 2 == 0 else checkouts[::-1]:
                out = Path(tmp) / f"out-{checkouts.index(checkout)}-{r}"
                fresh[checkout].append(timed_embed(checkout, files, out, extra))
                again[checkout].append(timed_embed(checkout, files, out, extra))
    base = statistics.median(fresh[HERE])
    for checkout in checkouts:
        med = statistics.median(fresh[checkout])
        print(f"{str(checkout):40} fresh median {med:6.2f} s (min {min(fresh[checkout]):6.2f}), "
              f"{lengths.sum() / med:6.1f} audio-s/s, time / this checkout's {med / base:.3f}; "
              f"re-run (all skipped) median {statistics.median(again[checkout]):5.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
