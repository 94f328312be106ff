"""What `hear-matpac demo` shows: a synthetic clip (a chirp over noise) embedded once, and the
lines that describe the checkpoint, the windows and what came out, with the time it took."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, List, Mapping, Union

import torch

from ..api import get_scene_and_timestamp_embeddings, load_model, resolve_device
from ..config import SAMPLE_RATE
from ..io import InputError
from ..weights.locate import announce_stand_in, best_available_weights

MAX_SECONDS = 3600.0  # one synthetic clip held in memory at once, with its spectrogram


def synthetic_clip(seconds: float) -> torch.Tensor:
    """`(1, samples)`: a 200 Hz -> 4 kHz chirp over quiet noise, deterministic."""
    n = max(1, round(seconds * SAMPLE_RATE))
    t = torch.arange(n, dtype=torch.float64) / SAMPLE_RATE
    f0, f1 = 200.0, 4000.0
    phase = 2 * math.pi * (f0 * t + (f1 - f0) * t**2 / (2 * max(seconds, 1e-3)))
    noise = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (0.5 * torch.sin(phase) + 0.01 * noise).float().unsqueeze(0)


def passes_said(passes: int) -> str:
    """How many times `get_scene_and_timestamp_embeddings` runs the encoder over the clip: once
    on MATPAC's own grid, else `passes` shifted passes for the timestamps and one more for the scene."""
    if passes == 1:
        return "one encoder pass"
    return f"{passes + 1} encoder passes: {passes} for the timestamps, 1 for the scene"


def demo(weights: Union[str, Path], seconds: float, device: str, options: Mapping[str, Any]) -> List[str]:
    """Embed a `seconds`-long synthetic clip with `weights` (a path or published name; '' for
    the best available, else the tiny untrained stand-in, announced once `options` have been
    checked) on `device` (`api.resolve_device`'s names), and return the lines describing it.
    `InputError` for `seconds` outside (0, MAX_SECONDS], a bad device or bad options."""
    if not 0 < seconds <= MAX_SECONDS:  # also refuses nan and inf
        raise InputError(f"--seconds must be a number of seconds in (0, {MAX_SECONDS:g}], got {seconds}")
    torch_device = resolve_device(device)
    path = best_available_weights(weights, announce=False)
    model = load_model(str(path), **options).to(torch_device)  # checks the options: a mistake is one line
    announce_stand_in(path)
    audio = synthetic_clip(seconds).to(torch_device)
    start = time.perf_counter()
    scene, embeddings, timestamps = get_scene_and_timestamp_embeddings(audio, model)
    elapsed = time.perf_counter() - start
    cfg, opts = model.encoder.config, model.options
    return [
        f"weights:     {path}",
        f"encoder:     embed_dim {cfg.embed_dim}, depth {cfg.depth}, heads {cfg.num_heads}, "
        f"window {cfg.n_frames} frames; layer {opts.layer}",
        f"windows:     {opts.window_seconds:g} s, overlap {opts.window_overlap:g}; timestamp hop {opts.timestamp_hop_ms} ms",
        f"audio:       {audio.shape[1]} samples ({audio.shape[1] / SAMPLE_RATE:.3f} s)",
        f"timestamps:  {tuple(embeddings.shape)} embeddings; first {timestamps[0, :3].tolist()} ms, "
        f"last {timestamps[0, -1].item()} ms",
        f"scene:       {tuple(scene.shape)}, L2 norm {scene.norm().item():.4f}",
        f"time:        {elapsed:.3f} s (scene and timestamp embeddings, {passes_said(opts.passes)})",
    ]
