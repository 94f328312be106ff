"""Does `torch.compile` speed up the encoder? Prints compile time and eager/compiled ratios.

    python benchmarks/compile_check.py [--freezing] [--threads N] [--windows 4] [--rounds 3]

One micro-batch of full 608-frame windows through a ViT-Base-shaped encoder with random
weights, eager (as the plugin runs it, with `cpu_packed_weights`) and compiled calls alternating back to back (5 pairs per round), so that a
shared machine's load hits both alike; prints each round's best and the median pair ratio. Compilation is slow (minutes on 2 cores) and happens
again for every new batch size or window length, which the plugin meets all the time.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch

from hear_matpac.encoder import MatpacEncoder
from hear_matpac.packed_linear import set_weight_packing
from hear_matpac.weights.synthetic import VIT_BASE


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--freezing", action="store_true", help="inductor freezing (weights as constants, packed GEMMs)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.freezing:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
    torch.manual_seed(0)
    plain = MatpacEncoder(VIT_BASE).eval()
    encoder = copy.deepcopy(plain)  # eager, as the plugin runs it: packed CPU fp32 weights
    set_weight_packing(encoder, True)
    mel = torch.randn(args.windows, 1, VIT_BASE.n_freq, VIT_BASE.n_frames)
    layer = VIT_BASE.depth - 1
    with torch.inference_mode():
        compiled = torch.compile(plain)
        start = time.perf_counter()
        out = compiled(mel, layer)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.windows} windows, "
              f"freezing={args.freezing}: compiled in {time.perf_counter() - start:.0f} s, "
              f"max abs diff {(out - encoder(mel, layer)).abs().max().item():.1e}")
        ratios = []
        for r in range(args.rounds):
            pairs = [(timed(lambda: encoder(mel, layer)), timed(lambda: compiled(mel, layer))) for _ in range(5)]
            eager, fast = min(p[0] for p in pairs), min(p[1] for p in pairs)
            ratios += [e / c for e, c in pairs]
            print(f"round {r}: best eager {eager:.3f} s, best compiled {fast:.3f} s, speed-up {eager / fast:.2f}x")
        print(f"median speed-up over {len(ratios)} back-to-back pairs: {statistics.median(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
