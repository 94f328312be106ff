"""`hear-matpac evaluate --jobs 2` against `--jobs 1` on this machine's CPU, and the scaling of
the same stages on paper for one node of 8 GPUs and for 4 nodes of 8.

Measured: both runs on the synthetic suite (`--devices cpu`, same model, fresh --out each), wall
time, the ratio, whether the scores are identical, and each stage's time from `summary.json`
(with heareval's own embedding time, `time_elapsed` in the task's `profile.embeddings.json`;
the rest of a stage is two process start-ups, model loading and the predictions runner).

On paper: `--models` copies of the measured stages of the `--jobs 1` run (a comparison of
that many models on these tasks) are list-scheduled longest first on P workers, one stage per
worker at a time, exactly as `evaluate` hands them out; the makespan is the time of the last
stage to finish. Assumed: a stage takes on a GPU slot what it took here alone (the ratios, not
the seconds, carry over), stages do not slow each other down (no shared disk or network
bottleneck; the I/O a stage does is printed so that this can be checked against a file
system's bandwidth), the validation of each model and the run's own start-up are added once.
4 nodes of 8 share one --out and take stages through its claims, which the model treats as
32 workers on one list.

    python benchmarks/evaluate_jobs.py [--weights tiny|vit-base] [--grid-points 1] [--models 8]
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

HERE = Path(__file__).resolve().parents[1]


def run(out: Path, weights: Path, jobs: int, extra: Sequence[str]) -> float:
    command = [sys.executable, "-m", "hear_matpac.cli", "evaluate", "--out", str(out), "--weights", str(weights),
               "--tensorflow", "stand-in", "--no-chart", "--devices", "cpu", "--jobs", str(jobs), *extra]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=HERE, env={**os.environ, "PYTHONPATH": str(HERE)},
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start


def makespan(stages: Sequence[float], workers: int) -> float:
    """Longest first onto the worker that comes free first (what the thread pool does)."""
    free = [0.0] * workers
    for seconds in sorted(stages, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + seconds)
    return max(free)


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20


def stage_rows(out: Path) -> List[Dict[str, object]]:
    summary = json.loads((out / "summary.json").read_text())
    rows = []
    for s in summary["stages"]:
        if s.get("stage") == "validate":
            rows.append({"task": "(validate)", "seconds": s["seconds"], "started": s["started"], "finished": s["finished"]})
            continue
        final = out / "runs" / s["model_folder"] / s["task"]
        profile = json.loads((final / "profile.embeddings.json").read_text())
        rows.append({"task": s["task"], "seconds": s["seconds"], "embedding": float(profile["time_elapsed"]),
                     "started": s["started"], "finished": s["finished"], "written_mib": folder_mib(final),
                     "audio_mib": folder_mib(Path(s["task_dir"]) / "16000")})  # fmt: skip
    return rows


def scores(out: Path) -> List[Tuple[str, str, object]]:
    return sorted((s["task"], s["metric"], s["value"]) for s in json.loads((out / "summary.json").read_text())["scores"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", choices=("tiny", "vit-base"), default="tiny",
                        help="the bundled tiny checkpoint (start-up dominates) or a ViT-Base-shaped random one")  # fmt: skip
    parser.add_argument("--grid-points", default="1")
    parser.add_argument("--tasks", default="", help="synthetic tasks (default all four)")
    parser.add_argument("--models", type=int, default=8, help="models compared, for the projection (default 8)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    import torch

    from hear_matpac.weights.locate import TINY_UNTRAINED
    from hear_matpac.weights.synthetic import write_random_checkpoint

    extra = ["--grid-points", args.grid_points] + (["--tasks", args.tasks] if args.tasks else [])
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(TINY_UNTRAINED) if args.weights == "tiny" else write_random_checkpoint(Path(tmp) / "vit_base.pt")
        walls = {jobs: run(Path(tmp) / f"jobs{jobs}", weights, jobs, extra) for jobs in (1, 2)}
        rows = {jobs: stage_rows(Path(tmp) / f"jobs{jobs}") for jobs in (1, 2)}
        same = scores(Path(tmp) / "jobs1") == scores(Path(tmp) / "jobs2")

    cores = len(os.sched_getaffinity(0))
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores, python {platform.python_version()}, "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}; weights {args.weights}, grid points {args.grid_points}\n")  # fmt: skip
    print(f"| | --jobs 1 | --jobs 2 |\n|---|---:|---:|\n| wall time (s) | {walls[1]:.1f} | {walls[2]:.1f} |")
    print(f"| speed-up | 1.00 | {walls[1] / walls[2]:.2f} |")
    print(f"\nidentical scores: {'yes' if same else 'NO'}\n")
    print("| stage | --jobs 1 (s) | of which embedding (s) | --jobs 2 (s) | audio read (MiB) | written (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for one, two in zip(rows[1], rows[2]):
        if one["task"] == "(validate)":
            print(f"| hear-validator | {one['seconds']:.1f} | | {two['seconds']:.1f} | | |")
        else:
            print(f"| {one['task']} | {one['seconds']:.1f} | {one['embedding']:.1f} | {two['seconds']:.1f} | "
                  f"{one['audio_mib']:.2f} | {one['written_mib']:.2f} |")  # fmt: skip

    stages = [r for r in rows[1] if r["task"] != "(validate)"]
    seconds = [float(r["seconds"]) for r in stages]
    validate = next(float(r["seconds"]) for r in rows[1] if r["task"] == "(validate)")
    busy = sum(seconds) + validate
    fixed = walls[1] - busy  # the run's own start-up, task checks, comparison table
    work = seconds * args.models
    io = sum(float(r["audio_mib"]) + float(r["written_mib"]) for r in stages) / sum(seconds)
    print(f"\nprojection: {args.models} models x {len(stages)} tasks = {len(work)} stages of {min(seconds):.1f} to "
          f"{max(seconds):.1f} s (--jobs 1 run); + {validate:.1f} s per model's hear-validator (in parallel over "
          f"the workers), + {fixed:.1f} s the run's own start-up and tables\n")  # fmt: skip
    print("| workers | makespan (s) | speed-up | efficiency | longest stage (s) | I/O of all workers (MiB/s) |")
    print("|---|---:|---:|---:|---:|---:|")
    serial = sum(work) + validate * args.models + fixed
    for workers, label in ((1, "1"), (2, "2"), (8, "8 GPUs"), (32, "4 nodes x 8 GPUs")):
        total = makespan(work, workers) + makespan([validate] * args.models, workers) + fixed
        print(f"| {label} | {total:.1f} | {serial / total:.1f} | {serial / total / workers:.0%} | {max(seconds):.1f} | "
              f"{io * min(workers, len(work)):.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
