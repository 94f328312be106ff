"""`hear-matpac demo`: embed a synthetic clip and print what came out."""
from __future__ import annotations

import argparse
import math
import time

import torch

from ..api import get_scene_and_timestamp_embeddings, load_model
from ..config import SAMPLE_RATE
from ..weights.locate import best_available_weights
from ..weights.locate import weights_help

MAX_SECONDS = 3600.0  # one synthetic clip held in memory at once, with its spectrogram


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="embed a synthetic clip with the best weights available and print the result",
        description="Embed a synthetic clip (a chirp over noise) and print shapes, timestamps "
        "and timing. Weights: " + weights_help(fallback=True) + ".",
    )
    parser.add_argument("--weights", default="", help=weights_help(fallback=True))
    parser.add_argument("--seconds", type=float, default=4.0, help="clip length (default 4.0)")
    parser.add_argument("--layer", type=int, default=-1, help="encoder layer, 0-based (default -1: last)")
    parser.add_argument("--timestamp-hop-ms", type=int, default=160, help="160 (default), 80, 40 or 20")
    parser.add_argument("--window-overlap", type=float, default=0.0, help="fraction in [0, 1) (default 0)")
    parser.add_argument(
        "--window-seconds", type=float, default=None,
        help="window length, a multiple of 0.16 s (default: the checkpoint's maximum, 6.08 s)",
    )  # fmt: skip
    parser.set_defaults(func=run)


def synthetic_clip(seconds: float) -> torch.Tensor:
    """`(1, samples)`: a 200 Hz -> 4 kHz chirp over quiet noise, deterministic."""
    n = max(1, round(seconds * SAMPLE_RATE))
    t = torch.arange(n, dtype=torch.float64) / SAMPLE_RATE
    f0, f1 = 200.0, 4000.0
    phase = 2 * math.pi * (f0 * t + (f1 - f0) * t**2 / (2 * max(seconds, 1e-3)))
    noise = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (0.5 * torch.sin(phase) + 0.01 * noise).float().unsqueeze(0)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.seconds <= MAX_SECONDS:  # also refuses nan and inf
        raise ValueError(f"--seconds must be a number of seconds in (0, {MAX_SECONDS:g}], got {args.seconds}")
    path = best_available_weights(args.weights)
    model = load_model(
        str(path), layer=args.layer, timestamp_hop_ms=args.timestamp_hop_ms,
        window_overlap=args.window_overlap, window_seconds=args.window_seconds,
    )  # fmt: skip
    audio = synthetic_clip(args.seconds)
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
    print(f"time:        {elapsed:.3f} s (scene and timestamp embeddings, one encoder pass)")
    return 0
