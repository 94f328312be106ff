"""Cost of the window options: audio-seconds encoded per second and peak extra memory.

Two models: the bundled tiny checkpoint, and a ViT-Base-shaped encoder (768 dim, 12 blocks,
608 frames, the published checkpoint's shape and so its cost) with random weights built here.
For each sweep of settings, time and memory are measured apart:

- time: one process embeds the same audio with `get_timestamp_embeddings` for every setting in
  turn, round after round (one warm-up round first), and keeps each setting's best time, so a
  load spike on a shared machine does not land on one setting only;
- memory: a fresh subprocess per setting makes one call and reports the peak above what it
  held before: resident set size on CPU (the kernel's high-water mark, reset first),
  allocated memory on CUDA. Batches hold `max_windows` full windows' worth of frames whatever
  the window length, so for the window_seconds sweep the peak for a single clip exactly one
  window long is also given ("1-window MiB"): the least memory that window length needs.

Ratios are against the sweep's first setting (the default), from the same run.

    python benchmarks/option_cost.py                       # both sweeps, both models
    python benchmarks/option_cost.py --sweep window_seconds --models vit-base --seconds 60
"""
from __future__ import annotations

import argparse
import atexit
import functools
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hear_matpac import get_timestamp_embeddings, load_model
from hear_matpac.config import FRAMES_PER_SECOND, HOP_LENGTH, SAMPLE_RATE, WIN_LENGTH
from hear_matpac.model import MatpacModel
from hear_matpac.weights.locate import TINY_UNTRAINED
from hear_matpac.weights.synthetic import write_random_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder, for _common (see its docstring)
from _common import status_kb  # noqa: E402

SWEEPS = {
    "window_seconds": [{"window_seconds": s} for s in (6.08, 3.04, 1.92, 0.96, 0.48, 0.16)],
    "options": [
        {},
        {"timestamp_hop_ms": 80},
        {"timestamp_hop_ms": 40},
        {"timestamp_hop_ms": 20},
        {"window_overlap": 0.5},
        {"timestamp_hop_ms": 40, "window_overlap": 0.5},
    ],
}
MODELS = ("tiny", "vit-base")


def build_model(name: str, options: dict) -> MatpacModel:
    """The tiny bundled checkpoint, or ViT-Base (768 dim, 12 blocks, 608 frames) with random
    weights: the published checkpoint's shape, so its cost, without needing the download."""
    return load_model(str(TINY_UNTRAINED if name == "tiny" else vit_base_checkpoint()), **options)


@functools.lru_cache(maxsize=1)
def vit_base_checkpoint() -> Path:
    """One random ViT-Base checkpoint, shared by every setting of a run (removed at exit)."""
    folder = tempfile.mkdtemp(prefix="option-cost-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return write_random_checkpoint(Path(folder) / "vit_base_random.pt")


def make_audio(spec: dict, device: torch.device) -> torch.Tensor:
    """`(clips, samples)` noise; with `one_window`, one clip giving exactly one window's frames."""
    g = torch.Generator().manual_seed(0)
    clips, samples = spec["clips"], round(spec["seconds"] * SAMPLE_RATE)
    if spec.get("one_window"):
        seconds = spec["options"].get("window_seconds", 6.08)
        clips, samples = 1, round(seconds * FRAMES_PER_SECOND) * HOP_LENGTH + WIN_LENGTH - HOP_LENGTH
    return (torch.rand(clips, samples, generator=g) - 0.5).to(device)


def peak_memory(spec: dict) -> float:
    """Child side: MiB above the baseline at the peak of one call with one model and setting."""
    device = torch.device(spec["device"])
    model = build_model(spec["model"], spec["options"]).to(device)
    audio = make_audio(spec, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        before = status_kb("VmRSS") * 1024
    get_timestamp_embeddings(audio, model)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else status_kb("VmHWM") * 1024
    return (peak - before) / 2**20


def run_child(spec: dict) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def best_times(model_name: str, settings: list, spec: dict) -> list:
    """Best wall time of one call per setting, settings interleaved round by round."""
    device = torch.device(spec["device"])
    models = [build_model(model_name, options).to(device) for options in settings]
    audio = make_audio(spec, device)
    best = [float("inf")] * len(settings)
    columns = [0] * len(settings)
    for round_index in range(spec["repeats"] + 1):
        for i, model in enumerate(models):
            start = time.perf_counter()
            emb, _ = get_timestamp_embeddings(audio, model)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if round_index:  # round 0 warms up
                best[i] = min(best[i], time.perf_counter() - start)
            columns[i] = emb.shape[1]
    return list(zip(best, columns))


def describe_machine(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    return f"{cpu.group(1) if cpu else platform.processor()}, {torch.get_num_threads()} torch threads"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", choices=[*SWEEPS, "all"], default="all")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each clip (default 30)")
    parser.add_argument("--clips", type=int, default=2, help="clips per call (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up (default 3)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(peak_memory(json.loads(args.child)))
        return 0
    models = args.models.split(",")
    if set(models) - set(MODELS) or args.seconds <= 0 or args.clips < 1 or args.repeats < 1:
        parser.error(f"--models from {', '.join(MODELS)}; --seconds, --clips, --repeats positive")
    sweeps = list(SWEEPS) if args.sweep == "all" else [args.sweep]
    audio_seconds = args.seconds * args.clips
    print(f"machine: {describe_machine(args.device)}; torch {torch.__version__}")
    print(f"audio: {args.clips} x {args.seconds:g} s per call; time: best of {args.repeats} interleaved rounds "
          "after a warm-up; memory: peak above baseline in a fresh process\n")
    for model in models:
        for sweep in sweeps:
            print(f"model {model}, sweep {sweep}")
            one_window = sweep == "window_seconds"
            extra = f" {'1-window MiB':>13}" if one_window else ""
            print(f"  {'options':<48} {'columns':>7} {'audio-s/s':>10} {'time x':>7} {'peak MiB':>9} {'mem x':>6}{extra}")
            spec = {"device": args.device, "seconds": args.seconds, "clips": args.clips, "repeats": args.repeats}
            settings = SWEEPS[sweep]
            times = best_times(model, settings, spec)
            memory = [run_child({**spec, "model": model, "options": options}) for options in settings]
            for options, (seconds, columns), mib in zip(settings, times, memory):
                label = json.dumps(options) if options else "(defaults)"
                if one_window:
                    single = run_child({**spec, "model": model, "options": options, "one_window": True})
                    extra = f" {single:>13.1f}"
                print(
                    f"  {label:<48} {columns:>7} {audio_seconds / seconds:>10.1f} "
                    f"{seconds / times[0][0]:>7.2f} {mib:>9.1f} {mib / memory[0]:>6.2f}{extra}",
                    flush=True,
                )
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
