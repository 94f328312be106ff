"""Clips of mixed lengths: one HEAR call per clip against one `embed_packed` call for them all.

    python benchmarks/packed_calls.py [--clips 16] [--min-s 0.5] [--max-s 10] [--rounds 3] [--device cpu]

A ViT-Base-shaped encoder with random weights (written in the published layout, loaded with
`load_model`), the default options. "per clip" is what `hear-matpac embed` did for files of
different lengths before its pipeline (`get_scene_embeddings` on one clip at a time); "packed"
is `hear_matpac.api.embed_packed` on all of them, whose windows of one length share encoder
micro-batches. The two alternate round by round; prints each one's best and median audio-seconds
per second, their ratio, encoder calls per way, and the largest difference of the outputs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import hear_matpac
from hear_matpac.api import embed_packed
from hear_matpac.config import SAMPLE_RATE
from hear_matpac.weights.synthetic import write_random_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder, for _common (see its docstring)
from _common import synchronize  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--min-s", type=float, default=0.5)
    parser.add_argument("--max-s", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    lengths = [round(s * SAMPLE_RATE) for s in np.random.default_rng(1).uniform(args.min_s, args.max_s, args.clips)]
    gen = torch.Generator().manual_seed(0)
    clips = [(0.1 * torch.randn(n, generator=gen)) for n in lengths]
    packed_audio = torch.cat(clips)
    with tempfile.TemporaryDirectory() as tmp:
        model = hear_matpac.load_model(str(write_random_checkpoint(Path(tmp) / "vit_base.pt"))).to(device)
    calls = {"per clip": 0, "packed": 0}
    way = ["per clip"]
    model.encoder.register_forward_pre_hook(lambda module, inputs: calls.__setitem__(way[0], calls[way[0]] + 1))

    def per_clip() -> torch.Tensor:
        return torch.cat([hear_matpac.get_scene_embeddings(c[None].to(device), model).cpu() for c in clips])

    def packed() -> torch.Tensor:
        return torch.stack([r.scene for r in embed_packed(packed_audio, lengths, model)])

    packed()  # warm-up (packs the weights on CPU)
    times: dict = {"per clip": [], "packed": []}
    outputs = {}
    for r in range(args.rounds):
        for name, fn in ((("per clip", per_clip), ("packed", packed)) if r % 2 == 0 else (("packed", packed), ("per clip", per_clip))):
            way[0] = name
            calls[name] = 0
            synchronize(device)
            start = time.perf_counter()
            outputs[name] = fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    audio_s = sum(lengths) / SAMPLE_RATE
    print(f"{args.clips} clips of {args.min_s}-{args.max_s} s ({audio_s:.0f} audio-s), ViT-Base random weights, "
          f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds")  # fmt: skip
    for name in times:
        print(f"{name:9}: best {audio_s / min(times[name]):6.1f} audio-s/s, median {audio_s / statistics.median(times[name]):6.1f}; "
              f"{calls[name]} encoder calls")  # fmt: skip
    print(f"per clip time / packed time: best {min(times['per clip']) / min(times['packed']):.2f}, "
          f"median {statistics.median(times['per clip']) / statistics.median(times['packed']):.2f}; "
          f"max abs difference of the scene embeddings {float((outputs['per clip'] - outputs['packed']).abs().max()):.2g}")  # fmt: skip


if __name__ == "__main__":
    main()
