"""Corpus `hear-matpac embed` under torchrun: audio-seconds per second of wall time for one
process with T threads against torchrun with 1 and P processes of 1 thread each (and one
process of 1 thread, the control for torchrun's own cost).

Writes N noise WAV files (16 kHz, lengths uniform in --min-s..--max-s, seeded) and a random
ViT-Base checkpoint (`write_random_checkpoint`; or --weights), then times whole commands, start
and model loading included, into a fresh output folder each:

    python -m hear_matpac.cli embed FILES --out NEW      (OMP_NUM_THREADS=T, and 1)
    python -m torch.distributed.run --standalone --nproc-per-node K -m hear_matpac.cli embed ...
                                                         (OMP_NUM_THREADS=1, K = 1 and P)

The setups alternate round by round so that the machine's noise hits them alike. Prints a
Markdown table of medians.

    python benchmarks/embed_torchrun.py [--files 40] [--min-s 1] [--max-s 20] [--rounds 2]
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
import torch

from hear_matpac.weights.synthetic import write_random_checkpoint

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder, for _common (see its docstring)
from _common import timed_run, write_noise_files  # noqa: E402


def timed(launcher: list, threads: int, files: list, out: Path, weights: str) -> float:
    command = [sys.executable, *launcher, "embed", *files, "--out", str(out), "--weights", weights,
               "--device", "cpu", "--quiet"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(HERE), OMP_NUM_THREADS=str(threads))
    return timed_run(command, env, HERE, f"embed: {' '.join(launcher)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--min-s", type=float, default=1.0)
    parser.add_argument("--max-s", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="threads of the single process (T)")
    parser.add_argument("--procs", type=int, default=2, help="torchrun processes of one thread (P)")
    parser.add_argument("--weights", help="checkpoint (default: a random ViT-Base one, written to a temporary folder)")
    args = parser.parse_args()
    lengths = np.random.default_rng(1).uniform(args.min_s, args.max_s, args.files)
    module = ["-m", "hear_matpac.cli"]
    setups = [
        (f"single process, {args.threads} threads", module, args.threads),
        ("single process, 1 thread (control)", module, 1),
        ("torchrun, 1 process x 1 thread", ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", *module], 1),
        (f"torchrun, {args.procs} processes x 1 thread",
         ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.procs), *module], 1),
    ]  # fmt: skip
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, torch {torch.__version__}; {args.files} files of {args.min_s:g}-{args.max_s:g} s, "
          f"{lengths.sum():.0f} audio-s in all, {args.rounds} round(s)\n")  # fmt: skip
    times: dict = {name: [] for name, _, _ in setups}
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or str(write_random_checkpoint(Path(tmp) / "vit_base_random.pt"))
        files = write_noise_files(Path(tmp), lengths)
        for r in range(args.rounds):
            for i, (name, launcher, threads) in enumerate(setups if r % 2 == 0 else setups[::-1]):
                times[name].append(timed(launcher, threads, files, Path(tmp) / f"out-{r}-{i}", weights))
    base = statistics.median(times[setups[0][0]])
    print("| setup | wall s (median) | audio-s/s | speed-up |")
    print("| --- | ---: | ---: | ---: |")
    for name, _, _ in setups:
        wall = statistics.median(times[name])
        print(f"| {name} | {wall:.1f} | {lengths.sum() / wall:.1f} | {base / wall:.2f}x |")


if __name__ == "__main__":
    main()
