"""`hear-matpac evaluate` twice into one --out: the second, fully resumed run's wall time as a
fraction of the first, and the disk a run leaves per task against heareval's defaults.

On the synthetic suite with a ViT-Base-shaped random checkpoint (`hear_matpac.weights.synthetic`).
heareval's defaults keep, per task, the embeddings folder and the predictions runner's `logs/`
(a checkpoint per grid point); `evaluate` keeps the embeddings folder and drops `logs/` unless
`--keep-logs`. The first run here is made with `--keep-logs` into a second --out to measure
what heareval's defaults would leave.

    python benchmarks/evaluate_resume.py [--grid-points 8] [--tasks synth_scene_multiclass]
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def run(out: Path, weights: Path, extra: list) -> float:
    command = [sys.executable, "-m", "hear_matpac.cli", "evaluate", "--out", str(out), "--weights", str(weights),
               "--tensorflow", "stand-in", "--no-chart", *extra]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=HERE, env={**os.environ, "PYTHONPATH": str(HERE)},
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start


def size_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid-points", default="8")
    parser.add_argument("--tasks", default="", help="synthetic tasks (default all)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from hear_matpac.weights.synthetic import write_random_checkpoint

    extra = ["--grid-points", args.grid_points] + (["--tasks", args.tasks] if args.tasks else [])
    with tempfile.TemporaryDirectory() as tmp:
        weights = write_random_checkpoint(Path(tmp) / "vit_base_random.pt")
        first = run(Path(tmp) / "out", weights, extra)
        second = run(Path(tmp) / "out", weights, extra)
        run(Path(tmp) / "kept", weights, extra + ["--keep-logs"])
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
        print(f"first run {first:.1f} s, resumed run {second:.1f} s: {100 * second / first:.1f}% of the first")
        for model in sorted(p for p in (Path(tmp) / "out" / "runs").iterdir() if p.is_dir()):
            for task in sorted(p for p in model.iterdir() if p.is_dir() and not p.name.startswith(".")):
                kept = Path(tmp) / "kept" / "runs" / model.name / task.name
                print(f"{task.name}: evaluate leaves {size_mib(task):.1f} MiB; with heareval's logs/ "
                      f"(its default) {size_mib(kept):.1f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
