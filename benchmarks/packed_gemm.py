"""What the `cpu_packed_weights` option buys on this CPU. Prints two tables.

    python benchmarks/packed_gemm.py [--threads N] [--rounds 4] [--calls 8]

1. GEMM rate of ViT-Base's four linear shapes for several row counts (tokens in a
   micro-batch: 31 = one 1 s window, 191 = one full window, 764 = four, ...): `F.linear`
   (MKL repacks the weight on every call) against MKL's packed GEMM with the weight packed
   once for a given row-count hint and then used for any row count. Best of `--rounds`.
2. The whole plugin path, `get_timestamp_embeddings` on 4 clips of 10 s with a ViT-Base-shaped
   encoder (random weights), with and without the option, calls alternating so that a shared
   machine's load hits both alike; the median of the per-pair speed-ups is printed, and the
   memory the packed copies take (RSS growth on the first packed call).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import hear_matpac
from hear_matpac.packed_linear import PACK_ROWS_HINT, packing_available
from hear_matpac.weights.synthetic import write_random_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder, for _common (see its docstring)
from _common import matmul_rate, noise, rss_mb  # noqa: E402

SHAPES = ((768, 2304), (768, 768), (768, 3072), (3072, 768))  # (in, out): qkv, proj, fc1, fc2
ROWS = (31, 191, 484, 764, 1248, 3100)
HINTS = (128, PACK_ROWS_HINT, 2048)


def best_seconds(fn, calls: int) -> float:
    fn()
    best = math.inf
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def gemm_table(rounds: int, calls: int) -> None:
    gen = torch.Generator().manual_seed(0)
    print(f"\n## GEMM rate, GFLOP/s, best of {rounds} rounds x {calls} calls")
    header = ["in x out", "rows", "F.linear"] + [f"packed, hint {h}" for h in HINTS] + ["packed / linear (hint %d)" % PACK_ROWS_HINT]
    print("| " + " | ".join(header) + " |")
    print("| ---: " * len(header) + "|")
    for k, n in SHAPES:
        weight, bias = torch.randn(n, k, generator=gen), torch.randn(n, generator=gen)
        packed = {h: torch.ops.mkl._mkl_reorder_linear_weight(weight, h) for h in HINTS}
        for rows in ROWS:
            x = torch.randn(rows, k, generator=gen)
            fns = {"linear": lambda: torch.nn.functional.linear(x, weight, bias)}
            for h, p in packed.items():
                fns[h] = lambda p=p: torch.ops.mkl._mkl_linear(x, p, weight, bias, rows)
            best = {name: math.inf for name in fns}
            for _ in range(rounds):
                for name, fn in fns.items():
                    best[name] = min(best[name], best_seconds(fn, calls))
            flops = 2 * rows * k * n
            rates = [flops / best[name] / 1e9 for name in fns]
            print(f"| {k} x {n} | {rows} | " + " | ".join(f"{r:.0f}" for r in rates)
                  + f" | {best['linear'] / best[PACK_ROWS_HINT]:.2f}x |")


def end_to_end(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "vit_base.pt"
        write_random_checkpoint(checkpoint)
        plain = hear_matpac.load_model(str(checkpoint), cpu_packed_weights=False)
        packed = hear_matpac.load_model(str(checkpoint))
    audio = noise(4, 10, torch.device("cpu"))
    hear_matpac.get_timestamp_embeddings(audio, plain)
    before = rss_mb()
    hear_matpac.get_timestamp_embeddings(audio, packed)  # packs
    grown = rss_mb() - before
    pairs = []
    for i in range(rounds):
        times = {}
        for name, model in ((("plain", plain), ("packed", packed)) if i % 2 else (("packed", packed), ("plain", plain))):
            start = time.perf_counter()
            hear_matpac.get_timestamp_embeddings(audio, model)
            times[name] = time.perf_counter() - start
        pairs.append(times)
    same = (hear_matpac.get_timestamp_embeddings(audio, packed)[0] - hear_matpac.get_timestamp_embeddings(audio, plain)[0]).abs().max()
    print(f"\n## get_timestamp_embeddings, 4 x 10 s, ViT-Base-shaped, {rounds} alternating pairs")
    print(f"best: packed {min(p['packed'] for p in pairs):.3f} s, plain {min(p['plain'] for p in pairs):.3f} s; "
          f"median per-pair speed-up {statistics.median(p['plain'] / p['packed'] for p in pairs):.2f}x; "
          f"max abs diff {same:.1e}; RSS growth on the first packed call (packed copies, first-call buffers) {grown:.0f} MB")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=4, help="GEMM rounds (default 4)")
    parser.add_argument("--calls", type=int, default=8, help="GEMM calls per round (default 8)")
    parser.add_argument("--pairs", type=int, default=8, help="end-to-end pairs (default 8)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not packing_available():
        print("this torch has no MKL packed GEMM: cpu_packed_weights does nothing here")
        return 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"square fp32 matmul {matmul_rate(torch.device('cpu'), torch.float32) / 1e9:.0f} GFLOP/s")
    gemm_table(args.rounds, args.calls)
    end_to_end(args.pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
