"""`hear-matpac demo`: embed a synthetic clip and print what came out."""
from __future__ import annotations

import argparse
import math
import time

import torch

from ..io import InputError
from ..api import get_scene_and_timestamp_embeddings, load_model
from ..config import SAMPLE_RATE
from ..weights.locate import announce_stand_in, best_available_weights, weights_help
from .flags import add_device, add_model_options, add_weights, model_options, resolve_device

MAX_SECONDS = 3600.0  # one synthetic clip held in memory at once, with its spectrogram


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="embed a synthetic clip with the best weights available and print the result",
        description="Embed a synthetic clip (a chirp over noise) and print shapes, timestamps "
        "and timing. Weights: " + weights_help(fallback=True) + ".",
    )
    add_weights(parser, fallback=True)
    parser.add_argument("--seconds", type=float, default=4.0, help="clip length (default 4.0)")
    add_device(parser)
    add_model_options(parser)
    parser.set_defaults(func=run)


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


def run(args: argparse.Namespace) -> int:
    if not 0 < args.seconds <= MAX_SECONDS:  # also refuses nan and inf
        raise InputError(f"--seconds must be a number of seconds in (0, {MAX_SECONDS:g}], got {args.seconds}")
    device = resolve_device(args.device)
    options = model_options(args)
    path = best_available_weights(args.weights, announce=False)
    model = load_model(str(path), **options).to(device)  # checks the options: a mistake is one line
    announce_stand_in(path)
    audio = synthetic_clip(args.seconds).to(device)
    start = time.perf_counter()
    scene, embeddings, timestamps = get_scene_and_timestamp_embeddings(audio, model)
    elapsed = time.perf_counter() - start
    cfg = model.encoder.config
    print(f"weights:     {path}")
    print(f"encoder:     embed_dim {cfg.embed_dim}, depth {cfg.depth}, heads {cfg.num_heads}, "
          f"window {cfg.n_frames} frames; layer {model.options.layer}")
    print(f"windows:     {model.options.window_seconds:g} s, overlap {model.options.window_overlap:g}; "
          f"timestamp hop {model.options.timestamp_hop_ms} ms")
    print(f"audio:       {audio.shape[1]} samples ({audio.shape[1] / SAMPLE_RATE:.3f} s)")
    print(f"timestamps:  {tuple(embeddings.shape)} embeddings; first {timestamps[0, :3].tolist()} ms, "
          f"last {timestamps[0, -1].item()} ms")
    print(f"scene:       {tuple(scene.shape)}, L2 norm {scene.norm().item():.4f}")
    print(f"time:        {elapsed:.3f} s (scene and timestamp embeddings, {passes_said(model.options.passes)})")
    return 0
