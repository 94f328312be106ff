"""Measuring helpers shared by the benchmark scripts: FLOP counts, the machine's matmul rate,
resident memory, test audio. (The random ViT-Base checkpoint they time comes from the package:
`hear_matpac.weights.synthetic`.)

Scripts import this module after putting their own folder first on `sys.path`, explicitly, so
that it works both as `python benchmarks/NAME.py` and as `python -m benchmarks.NAME`.
"""
from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import soundfile
import torch

from hear_matpac.config import FREQ_PATCHES, PATCH, SAMPLE_RATE, EncoderConfig
from hear_matpac.frontend import n_stft_frames
from hear_matpac.windows import plan_windows


def encoder_flops(n_samples: int, n_clips: int, config: EncoderConfig, layer: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of the encoder for `n_clips` clips of `n_samples`, over
    the windows the plugin encodes, blocks 0..`layer` only."""
    d = config.embed_dim
    plan = plan_windows(n_stft_frames(n_samples), config.n_frames)
    total = 0
    for group in plan.groups:
        patches = FREQ_PATCHES * (group.frames // PATCH)
        tokens = 1 + patches
        patch_embed = 2 * patches * PATCH * PATCH * d
        per_block = (
            2 * tokens * d * 3 * d  # qkv
            + 2 * tokens * tokens * d  # scores q k^T, all heads
            + 2 * tokens * tokens * d  # weights x v
            + 2 * tokens * d * d  # output projection
            + 2 * 2 * tokens * d * 4 * d  # MLP fc1 + fc2
        )
        total += len(group.starts) * n_clips * (patch_embed + (layer + 1) * per_block)
    return total


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, dtype: torch.dtype, reps: int = 3) -> float:
    """Best-of-`reps` FLOP/s of one dense square matmul (2048 on CPU, 8192 on CUDA)."""
    n = 8192 if device.type == "cuda" else 2048
    gen = torch.Generator(device=device).manual_seed(1)
    a = torch.randn(n, n, device=device, generator=gen).to(dtype)
    b = torch.randn(n, n, device=device, generator=gen).to(dtype)
    a @ b
    best = math.inf
    for _ in range(reps):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def rss_mb() -> float:
    return status_kb("VmRSS") / 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    return status_kb("VmHWM") / 1024


def status_kb(key: str) -> float:
    """A `/proc/self/status` figure in kB (VmRSS, VmHWM, RssAnon...), or NaN where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def noise(clips: int, seconds: float, device: torch.device, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    samples = round(seconds * SAMPLE_RATE)
    return (0.1 * torch.randn(clips, samples, generator=gen)).to(device)


def write_noise_files(folder: Path, lengths: Sequence[float], rate: int = SAMPLE_RATE) -> list:
    """WAV files of seeded noise (amplitude 0.1) in `folder`, one per length in seconds; their paths."""
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate(lengths):
        path = Path(folder) / f"clip{i:05d}.wav"
        soundfile.write(path, (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate)
        paths.append(str(path))
    return paths


def timed_run(command: Sequence[str], env: Mapping[str, str], cwd: Path, what: str) -> float:
    """Wall seconds of `command`, start-up included; the script ends, naming `what`, if it fails."""
    start = time.perf_counter()
    result = subprocess.run(list(command), env=dict(env), cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{what} failed: {result.stderr.strip()[-800:]}")
    return elapsed
