"""Throughput, compute bound and memory of hear-matpac on this machine. Prints tables.

    python benchmarks/throughput.py            # CPU, and CUDA when present
    python benchmarks/throughput.py --quick    # fewer cases and rounds, no 20-minute clip

A ViT-Base-shaped MATPAC encoder (embed_dim 768, depth 12, 608 frames) with random weights is
written in the published checkpoint layout to a temporary file and loaded with `load_model`,
so the whole plugin path is timed (front end, windows, encoder, stitching, timestamps).

Compute bound. The encoder's multiply-add FLOPs for a clip are counted from the window plan
the plugin actually uses (patch embedding, qkv, attention scores and weighted sum, output
projection, MLP, blocks up to the requested layer only); LayerNorm, GELU, softmax and copies
count as nothing. The bound is those FLOPs divided by the machine's dense matmul rate (a
2048 x 2048 float32 product on CPU, 8192 on CUDA; bf16/fp16 rows also show their own dtype's
rate). The machine may be shared, so every round measures the matmul rate and then times
every case once; a case's figure is its best round, its bound uses the best matmul rate of
the same rounds, and the median of the per-round fractions is printed beside it.

Memory. Peak RSS (VmHWM, reset before each timed call) and, on CUDA, max allocated. In a fresh
child process a 20-minute clip goes through `get_timestamp_embeddings` in fp32 on CPU; its
peak RSS growth is printed, with the peak of live tensor bytes created by the call (tracked
op by op, device-independent: what CUDA's max allocated would count, less kernel workspaces).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import hear_matpac
from hear_matpac.api import column_features
from hear_matpac.config import EncoderConfig
from hear_matpac.options import DEFAULT_MAX_WINDOWS
from hear_matpac.packed_linear import checked_packing
from hear_matpac.precision import PRECISIONS
from hear_matpac.weights.locate import TINY_UNTRAINED as TINY_CHECKPOINT
from hear_matpac.weights.read import expected_shapes
from hear_matpac.weights.synthetic import VIT_BASE, write_random_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder, for _common (see its docstring)
from _common import encoder_flops, matmul_rate, noise, peak_rss_mb, reset_peak_rss, rss_mb, synchronize  # noqa: E402

# (clip seconds, clips per call): heareval sends 1 clip at a time for 120 s tasks (and
# FSD50K), up to ~100 for short ones.
CASES = ((1, 1), (1, 100), (10, 1), (10, 4), (10, 16), (120, 1))
QUICK_CASES = ((1, 16), (10, 4), (120, 1))
LONG_CLIP_SECONDS = 20 * 60
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
MB = 2**20


# ---------------------------------------------------------------- measuring


class PeakTensorBytes(TorchDispatchMode):
    """Peak bytes of live tensor storages created while active (device-independent).

    Every op's outputs are recorded by storage; a storage counts until it is freed. Storages
    that existed before (weights, inputs) are not counted; kernels' internal workspaces and
    opaque tensors (the packed weight copies of `cpu_packed_weights`) are not seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[int, weakref.ref]] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {s.data_ptr() for s in _storages(list(args) + list((kwargs or {}).values()))}
        for storage in _storages(out):
            key = storage.data_ptr()
            if key == 0 or key in self.live or key in inputs:  # views and in-place results are not new
                continue
            self.live[key] = (storage.nbytes(), weakref.ref(storage, self._freed(key)))
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        return out

    def _freed(self, key: int) -> Callable[[weakref.ref], None]:
        def callback(_: weakref.ref) -> None:
            nbytes, _ref = self.live.pop(key, (0, None))
            self.current -= nbytes

        return callback


def _storages(value: object) -> Iterator[torch.UntypedStorage]:
    """Storages of the tensors in `value`; opaque tensors (MKL's packed weight copies, made
    once per model) have none and show in RSS only."""
    if isinstance(value, torch.Tensor):
        if value.layout != torch._mkldnn:
            yield value.untyped_storage()
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _storages(item)


@dataclass
class CaseResult:
    seconds: float
    clips: int
    flops: int
    times: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)  # matmul rate of the same round
    peak_rss: float = float("nan")
    cuda_peak: float = float("nan")


def time_call(model: torch.nn.Module, audio: torch.Tensor) -> float:
    synchronize(audio.device)
    start = time.perf_counter()
    hear_matpac.get_timestamp_embeddings(audio, model)
    synchronize(audio.device)
    return time.perf_counter() - start


def run_throughput(
    checkpoint: Path, device: torch.device, precision: str, cases, rounds: int
) -> tuple[list[CaseResult], list[float]]:
    """Time every case once per round, each call right after a measurement of the fp32 matmul
    rate (paired, so that a fraction compares like with like on a shared machine). Returns the
    results and the matmul rates of the precision's own dtype."""
    model = hear_matpac.load_model(str(checkpoint), precision=precision).to(device)
    dtype = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    results = []
    for seconds, clips in cases:
        audio = noise(clips, seconds, device)
        results.append(CaseResult(seconds, clips, encoder_flops(audio.shape[1], clips, VIT_BASE, VIT_BASE.depth - 1)))
        time_call(model, audio)  # warm-up
    own_rates = []
    for _ in range(rounds):
        if dtype != torch.float32:
            own_rates.append(matmul_rate(device, dtype))
        for result in results:
            audio = noise(result.clips, result.seconds, device)
            result.rates.append(matmul_rate(device, torch.float32))
            rss_ok = device.type == "cpu" and reset_peak_rss()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            result.times.append(time_call(model, audio))
            if rss_ok:
                result.peak_rss = peak_rss_mb()
            if device.type == "cuda":
                result.cuda_peak = torch.cuda.max_memory_allocated(device) / MB
    return results, own_rates


def print_throughput(device, precision, results, own_rates, threads) -> None:
    fp32_rates = [rate for r in results for rate in r.rates]
    best_rate = max(fp32_rates)
    print(f"\n## {device.type}, {precision}" + (f", {threads} threads" if device.type == "cpu" else ""))
    print(f"dense fp32 matmul rate: best {best_rate / 1e9:.1f} GFLOP/s, median {statistics.median(fp32_rates) / 1e9:.1f} "
          f"over {len(fp32_rates)} measurements")
    if precision != "fp32":
        print(f"dense {precision} matmul rate: best {max(own_rates) / 1e9:.1f} GFLOP/s")
    print("| clip | clips/call | GFLOP/audio-s | audio-s per s (best) | bound audio-s per s | fraction of fp32 bound (best / median) "
          + ("| fraction of own-dtype bound " if precision != "fp32" else "")
          + "| peak RSS MB | CUDA max alloc MB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if precision != "fp32" else "") + " ---: | ---: |")
    for r in results:
        audio_s = r.seconds * r.clips
        best = audio_s / min(r.times)
        flops_per_audio_s = r.flops / audio_s
        bound = best_rate / flops_per_audio_s
        fractions = [(r.flops / t) / rate for t, rate in zip(r.times, r.rates)]
        own = f"| {best / (max(own_rates) / flops_per_audio_s):.2f} " if precision != "fp32" else ""
        print(f"| {r.seconds:g} s | {r.clips} | {flops_per_audio_s / 1e9:.2f} | {best:.1f} | {bound:.1f} "
              f"| {best / bound:.2f} / {statistics.median(fractions):.2f} {own}| {r.peak_rss:.0f} | {r.cuda_peak:.0f} |")


# ---------------------------------------------------------------- accuracy


def fixture_accuracy(device: torch.device, precision: str) -> tuple[float, float, float]:
    """Max abs diff, min and mean cosine (per column) of `precision` against fp32 features,
    over every layer of every parity fixture, with the tiny checkpoint."""
    worst, cos_min, cos_all = 0.0, 1.0, []
    for path in sorted(FIXTURES.glob("tiny_len*.npz")):
        audio = torch.from_numpy(np.load(path)["audio"]).to(device)
        for layer in range(3):
            ref = column_features(audio, hear_matpac.load_model(str(TINY_CHECKPOINT), layer=layer).to(device))
            model = hear_matpac.load_model(str(TINY_CHECKPOINT), layer=layer, precision=precision).to(device)
            got = column_features(audio, model)
            worst = max(worst, (got - ref).abs().max().item())
            cos = torch.nn.functional.cosine_similarity(got, ref, dim=-1)
            cos_min = min(cos_min, cos.min().item())
            cos_all.append(cos.flatten().cpu())
    return worst, cos_min, torch.cat(cos_all).mean().item()


def vit_base_accuracy(checkpoint: Path, device: torch.device, precision: str) -> tuple[float, float, float]:
    audio = noise(2, 10, device, seed=3)
    ref = column_features(audio, hear_matpac.load_model(str(checkpoint)).to(device))
    got = column_features(audio, hear_matpac.load_model(str(checkpoint), precision=precision).to(device))
    cos = torch.nn.functional.cosine_similarity(got, ref, dim=-1)
    return (got - ref).abs().max().item(), cos.min().item(), cos.mean().item()


# ---------------------------------------------------------------- memory


def long_clip_child(checkpoint: str, seconds: float) -> None:
    """In a fresh process: RSS growth and tracked tensor peak of one long clip, fp32, CPU."""
    model = hear_matpac.load_model(checkpoint)
    audio = noise(1, seconds, torch.device("cpu"), seed=5)
    before = rss_mb()
    exact = reset_peak_rss()
    with checked_packing(model.encoder):  # packs, as the call does first; done here to measure it apart
        pass
    packed = rss_mb() - before
    tracker = PeakTensorBytes()
    start = time.perf_counter()
    with tracker:
        emb, ts = hear_matpac.get_timestamp_embeddings(audio, model)
    elapsed = time.perf_counter() - start
    peak = peak_rss_mb() if exact else float("nan")
    print(f"RESULT {before:.1f} {peak:.1f} {tracker.peak / MB:.1f} {elapsed:.2f} {emb.shape[1]} {packed:.1f}")


def run_long_clip(checkpoint: Path, seconds: float) -> None:
    cmd = [sys.executable, __file__, "--long-clip-child", str(checkpoint), str(seconds)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("RESULT"))
    before, peak, tensors, elapsed, columns, packed = line.split()[1:]
    print(f"\n## {float(seconds) / 60:g}-minute clip, one call, CPU fp32, max_windows {DEFAULT_MAX_WINDOWS} (fresh process)")
    print(f"RSS before the call {float(before):.0f} MB (weights loaded); peak during it {float(peak):.0f} MB; "
          f"growth {float(peak) - float(before):.0f} MB (limit 2048 MB), of which {float(packed):.0f} MB are the "
          f"packed weight copies made on a first CPU fp32 call (cpu_packed_weights)")
    weights = weights_mb(VIT_BASE, 4)
    print(f"peak live tensors created by the call: {float(tensors):.0f} MB, + weights {weights:.0f} MB = "
          f"{float(tensors) + weights:.0f} MB: what CUDA max allocated would show for this call (not measured here)")
    print(f"{columns} embeddings in {float(elapsed):.1f} s")


def weights_mb(config: EncoderConfig, bytes_per_value: int) -> float:
    return sum(math.prod(s) for s in expected_shapes(config).values()) * bytes_per_value / MB


def stored_low_precision_saving_mb(config: EncoderConfig) -> float:
    """MB saved when linear and convolution weights are stored in 16 bits (bf16/fp16 options)."""
    low = sum(math.prod(s) for k, s in expected_shapes(config).items()
              if k.startswith("patch_embed") or ".attn." in k or ".mlp." in k)
    return low * 2 / MB


def micro_batch_memory(checkpoint: Path, windows: tuple[int, ...]) -> None:
    """Tracked tensor peak of one encoder micro-batch of full 608-frame windows, fp32 and bf16."""
    print("\n## Encoder micro-batch memory, ViT-Base, full windows (peak live tensors, tracked; weights excluded)")
    print("| windows | fp32 MB | bf16 MB |")
    print("| ---: | ---: | ---: |")
    fp32 = hear_matpac.load_model(str(checkpoint)).encoder
    bf16 = hear_matpac.load_model(str(checkpoint), precision="bf16").encoder
    mel = torch.zeros(max(windows), 1, VIT_BASE.n_freq, VIT_BASE.n_frames)
    for n in windows:
        row = []
        for encoder, autocast in ((fp32, contextlib.nullcontext()), (bf16, torch.autocast("cpu", dtype=torch.bfloat16))):
            tracker = PeakTensorBytes()
            with torch.inference_mode(), autocast, tracker:
                encoder(mel[:n], VIT_BASE.depth - 1)
            row.append(tracker.peak / MB)
        print(f"| {n} | {row[0]:.0f} | {row[1]:.0f} |")
    print(f"weights: {weights_mb(VIT_BASE, 4):.0f} MB fp32; with bf16/fp16 linear and conv weights "
          f"{weights_mb(VIT_BASE, 4) - stored_low_precision_saving_mb(VIT_BASE):.0f} MB")


# ---------------------------------------------------------------- main


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{name}, {os.cpu_count()} logical CPUs, load average {load:.1f} at start"


def _parse_case(text: str) -> tuple[float, int]:
    try:
        seconds, clips = text.lower().split("x")
        return float(seconds), int(clips)
    except ValueError:
        raise SystemExit(f"--cases: expected SECONDSxCLIPS such as 10x4, got {text!r}") from None


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 cases, 2 rounds, no long clip")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per case (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's default)")
    parser.add_argument("--devices", default="", help="comma-separated, e.g. cpu,cuda (default: cpu and cuda when present)")
    parser.add_argument("--precisions", default="fp32,bf16,fp16", help=f"comma-separated subset of {','.join(PRECISIONS)}")
    parser.add_argument("--cases", default="", help="comma-separated SECONDSxCLIPS, e.g. 10x4,120x1 (default: heareval-like set)")
    parser.add_argument("--skip-long-clip", action="store_true", help="skip the 20-minute clip memory check")
    parser.add_argument("--long-clip-child", nargs=2, metavar=("CHECKPOINT", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.long_clip_child:
        long_clip_child(args.long_clip_child[0], float(args.long_clip_child[1]))
        return 0
    devices = [torch.device(d) for d in args.devices.split(",") if d] or (
        [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    )
    precisions = [p for p in args.precisions.split(",") if p]
    cases = QUICK_CASES if args.quick else CASES
    if args.cases:
        cases = tuple(_parse_case(c) for c in args.cases.split(","))
    rounds = 2 if args.quick else args.rounds
    print(f"# hear-matpac throughput, torch {torch.__version__}, hear-matpac {hear_matpac.__version__}")
    for device in devices:
        print(f"{device.type}: {machine_description(device)}")
    print(f"CPU threads: {torch.get_num_threads()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    print("model: ViT-Base-shaped MATPAC, random weights (embed_dim 768, depth 12, 608 frames), last layer")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "vit_base_random.pt"
        write_random_checkpoint(checkpoint)
        accuracy = []
        for device in devices:
            for precision in precisions:
                if precision == "fp16" and device.type == "cpu":
                    continue
                if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(False):
                    continue
                results, own_rates = run_throughput(checkpoint, device, precision, cases, rounds)
                print_throughput(device, precision, results, own_rates, torch.get_num_threads())
                if precision != "fp32":
                    accuracy.append((device, precision, fixture_accuracy(device, precision),
                                     vit_base_accuracy(checkpoint, device, precision)))
        if accuracy:
            print("\n## Accuracy against fp32 (frame features; cosine per column)")
            print("| device | precision | parity fixtures, tiny model, all layers: max abs diff | min cosine | mean cosine "
                  "| ViT-Base random, 2 x 10 s, last layer: max abs diff | min cosine | mean cosine |")
            print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
            for device, precision, fix, vit in accuracy:
                print(f"| {device.type} | {precision} | {fix[0]:.2e} | {fix[1]:.6f} | {fix[2]:.6f} "
                      f"| {vit[0]:.2e} | {vit[1]:.6f} | {vit[2]:.6f} |")
        micro_batch_memory(checkpoint, (1, DEFAULT_MAX_WINDOWS))
        if not (args.quick or args.skip_long_clip):
            run_long_clip(checkpoint, LONG_CLIP_SECONDS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
