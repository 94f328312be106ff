"""Where the fp32 CPU time goes: GEMMs, attention, the rest. Prints shares and rates.

    python benchmarks/profile_breakdown.py [--threads N] [--clips 4] [--seconds 10]

Profiles one `column_features` call of a ViT-Base-shaped encoder with random weights
(torch.profiler, self CPU time per op), groups ops into GEMM / attention / other, and gives the
GEMMs' achieved rate against a square matmul measured just before. Then times the attention
kernels (flash, math backend, hand-written matmul-softmax-matmul) on one full micro-batch,
alternating. Explains the fraction of bound printed by `throughput.py`.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import hear_matpac
from hear_matpac.api import column_features
from hear_matpac.config import FREQ_PATCHES, HEAD_DIM, PATCH
from hear_matpac.frontend import n_stft_frames
from hear_matpac.windows import plan_windows
from hear_matpac.weights.synthetic import VIT_BASE, write_random_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder, for _common (see its docstring)
from _common import encoder_flops, matmul_rate  # noqa: E402

GEMM_OPS = {"aten::addmm", "aten::mm", "aten::bmm", "aten::mkldnn_convolution", "mkl::_mkl_linear"}
ATTENTION_OPS = {"aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math"}


def best_time(fn, calls: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model = hear_matpac.load_model(write_random_checkpoint(Path(tmp) / "vit_base_random.pt"))
    audio = 0.1 * torch.randn(args.clips, round(args.seconds * 16000))
    flops = encoder_flops(audio.shape[1], args.clips, VIT_BASE, VIT_BASE.depth - 1)
    column_features(audio, model)
    rate = matmul_rate(torch.device("cpu"), torch.float32)
    with torch.profiler.profile() as prof:
        column_features(audio, model)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMM_OPS)
    attention = sum(e.self_cpu_time_total for e in events if e.key in ATTENTION_OPS)
    d = VIT_BASE.embed_dim
    attention_flops = 0
    for n_tokens, n_windows in _windows(audio.shape[1], args.clips):
        attention_flops += n_windows * VIT_BASE.depth * 4 * n_tokens * n_tokens * d
    gemm_flops = flops - attention_flops
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clips} x {args.seconds:g} s, "
          f"square fp32 matmul {rate / 1e9:.0f} GFLOP/s just before")
    print(f"whole call: {total / 1e6:.3f} s profiled, {flops / (total / 1e6) / 1e9:.0f} GFLOP/s = "
          f"{flops / (total / 1e6) / rate:.2f} of the square-matmul rate")
    print(f"GEMMs (packed mkl_linear or addmm, conv): {gemm / total:.0%} of the time, {gemm_flops / 1e9:.0f} GFLOP at "
          f"{gemm_flops / (gemm / 1e6) / 1e9:.0f} GFLOP/s = {gemm_flops / (gemm / 1e6) / rate:.2f} of the square rate")
    print(f"attention kernel: {attention / total:.0%} of the time for {attention_flops / flops:.1%} of the FLOPs, "
          f"{attention_flops / (attention / 1e6) / 1e9:.0f} GFLOP/s")
    print(f"everything else (GELU, adds, LayerNorm, copies, front end, ...): {(total - gemm - attention) / total:.0%}")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]:
        print(f"  {e.key:55s} {e.self_cpu_time_total / total:6.1%}  x{e.count}")

    heads = d // HEAD_DIM
    q, k, v = torch.randn(3, 4, heads, 1 + FREQ_PATCHES * VIT_BASE.max_columns, HEAD_DIM).unbind(0)
    n = q.shape[2]
    att_flops = 4 * 4 * heads * n * n * HEAD_DIM
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def by_hand():
        return torch.softmax(q @ k.transpose(-1, -2) * HEAD_DIM**-0.5, dim=-1) @ v

    def math_backend():
        with sdpa_kernel(SDPBackend.MATH):
            return sdpa(q, k, v)

    print(f"attention on 4 full windows ({heads} heads, {n} tokens), best of 5, 3 alternating rounds, GFLOP/s:")
    with torch.inference_mode():
        for r in range(3):
            times = {name: best_time(fn) for name, fn in
                     (("flash (used)", lambda: sdpa(q, k, v)), ("math backend", math_backend), ("by hand", by_hand))}
            print("  " + ", ".join(f"{name} {att_flops / t / 1e9:.0f}" for name, t in times.items()))
    return 0


def _windows(n_samples: int, clips: int) -> list[tuple[int, int]]:
    """(tokens, windows) per window length of the plan."""
    plan = plan_windows(n_stft_frames(n_samples), VIT_BASE.n_frames)
    return [(1 + FREQ_PATCHES * (g.frames // PATCH), clips * len(g.starts)) for g in plan.groups]


if __name__ == "__main__":
    sys.exit(main())
