"""Acceptance of hear-matpac on one device: PASS/FAIL lines, then a throughput table; exit 1 on any FAIL.

    python benchmarks/gpu_acceptance.py                      # cuda:0 when present, else cpu
    python benchmarks/gpu_acceptance.py --device cuda:0      # all checks and cases (minutes)
    python benchmarks/gpu_acceptance.py --device cpu --quick # the suite's own run (under a minute)
    python benchmarks/gpu_acceptance.py --compile            # also: eager vs torch.compile (INFO)

Checks, each against the CPU or the published code's reference outputs (tests/fixtures):
  parity     fp32 frame features of every layer of every fixture within 1e-4 of the reference;
             bf16 / fp16, where the device runs them, cosine >= 0.999 per column.
  contract   on the device: float32 outputs on the audio's device, timestamps equal to the
             CPU's, a clip alone equals it in a batch, `max_windows` 1 equals the default,
             and every option (layer, hops, overlap, window length, precisions) against the CPU.
  syncs      host waits per call do not grow with the number of micro-batches (CUDA:
             `torch.cuda.set_sync_debug_mode`; CPU: ops that read the device, counted by dispatch).
  sdpa       attention runs a flash, memory-efficient or cuDNN kernel (CUDA), not the math one.
  tf32       a forward pre-hook reads every TF32 getter, old and new, inside fp32 and tf32 calls
             after the user's `set_float32_matmul_precision("high")`: none raises, each says the
             call's setting, and the user's state is back afterwards (issue 24; CPU: the same).
  retry      a failed call's tensors are gone before its retry: the encoder's halved batch and
             embed's per-file fallback (CUDA: the memory allocated is back to what it was before
             the failed call, with a 64 MiB tensor held by it; CPU: a weak reference is dead).
  oom        under a memory cap (CUDA: `set_per_process_memory_fraction`; CPU: an injected
             error), an out-of-memory batch is retried in halves with unchanged outputs.
Throughput: a ViT-Base-shaped encoder with random weights (benchmarks/throughput.py), per
precision and case (clips x seconds): audio seconds per second, encoder TFLOP/s (multiply-adds
of the windows encoded), the fraction of the best dense matmul rate measured here (bf16 or
fp32), and peak memory (CUDA: max allocated; CPU: peak RSS of the process). Then the `embed`
row: `hear-matpac embed` on WAV files end to end against the encoder's rate on the same audio.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder, for _common (see its docstring)
import throughput as tp  # noqa: E402  (a sibling script: its timing loop, fixtures and machine line)

import hear_matpac  # noqa: E402
from hear_matpac import batching  # noqa: E402
from hear_matpac.api import column_features, get_scene_and_timestamp_embeddings  # noqa: E402
from hear_matpac.precision import cuda_bf16_native  # noqa: E402
from hear_matpac.weights.synthetic import write_random_checkpoint  # noqa: E402

TINY = str(tp.TINY_CHECKPOINT)
PARITY_TOL = 1e-4
COSINE_MIN = 0.999
CASES = ((512, 1), (16, 10), (512, 10), (1, 1200))  # clips x seconds
QUICK_CASES = {"cuda": ((512, 1), (16, 10)), "cpu": ((4, 1), (1, 10))}
MB = 2**20


class Report:
    """PASS / FAIL lines as they come, and the count of failures."""

    def __init__(self) -> None:
        self.failures = 0

    def check(self, name: str, ok: bool, detail: str) -> None:
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
        self.failures += not ok

    @contextlib.contextmanager
    def guard(self, name: str) -> Iterator[None]:
        """A check that raises is a FAIL with the error's first line, and the run goes on."""
        try:
            yield
        except Exception as err:  # noqa: BLE001 - reported, not hidden
            self.check(name, False, f"raised {type(err).__name__}: {(str(err).splitlines() or [''])[0]}")


def low_precisions(device: torch.device) -> list[str]:
    """bf16 / fp16 where `device` runs them natively."""
    if device.type == "cuda":
        return (["bf16"] if cuda_bf16_native(device) else []) + ["fp16"]
    return ["bf16"] if device.type == "cpu" else []


def cosine_min(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.float().cpu(), b.float().cpu(), dim=-1).min().item()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float().cpu() - b.float().cpu()).abs().max().item()


def tiny(device: torch.device, **options) -> hear_matpac.api.MatpacModel:
    return hear_matpac.load_model(TINY, **options).to(device)


# ---------------------------------------------------------------- checks


def check_parity(report: Report, device: torch.device, quick: bool) -> None:
    fixtures = [dict(np.load(p)) for p in sorted(tp.FIXTURES.glob("tiny_len*.npz"))]
    for precision in ["fp32", *low_precisions(device)]:
        with report.guard(f"parity {precision}"):
            worst, cos = 0.0, 1.0
            for case in fixtures:
                audio = torch.from_numpy(case["audio"]).to(device)
                for layer in range(case["layers"].shape[1]):
                    reference = torch.from_numpy(case["layers"][:, layer])
                    got = column_features(audio, tiny(device, layer=layer, precision=precision))
                    got = got[:, : reference.shape[1]]
                    worst, cos = max(worst, max_diff(got, reference)), min(cos, cosine_min(got, reference))
            if precision == "fp32":
                report.check("parity fp32", worst <= PARITY_TOL, f"max abs diff {worst:.2e} (limit {PARITY_TOL:g}) "
                             f"over {len(fixtures)} fixtures, every layer")  # fmt: skip
            else:
                report.check(f"parity {precision}", cos >= COSINE_MIN, f"min cosine {cos:.6f} (limit {COSINE_MIN}), "
                             f"max abs diff {worst:.2e}")  # fmt: skip


def check_contract(report: Report, device: torch.device, quick: bool) -> None:
    gen = torch.Generator().manual_seed(5)
    audio = (0.2 * torch.randn(3, 12 * 16000, generator=gen)).clamp(-1, 1)  # 2 windows and a tail
    on_device = audio.to(device)
    with report.guard("contract outputs"):
        model = tiny(device)
        scene, emb, ts = get_scene_and_timestamp_embeddings(on_device, model)
        where = {(t.dtype, t.device) for t in (scene, emb, ts)}
        report.check("contract outputs", where == {(torch.float32, on_device.device)},
                     f"dtype and device {sorted(map(str, where))}")  # fmt: skip
        cpu_scene, cpu_emb, cpu_ts = get_scene_and_timestamp_embeddings(audio, tiny(torch.device("cpu")))
        report.check("contract timestamps", torch.equal(ts.cpu(), cpu_ts), "equal to the CPU's")
        diff = max(max_diff(emb, cpu_emb), max_diff(scene, cpu_scene))
        report.check("contract fp32 vs cpu", diff <= PARITY_TOL, f"max abs diff {diff:.2e}")
        alone = max(max_diff(hear_matpac.get_timestamp_embeddings(on_device[i : i + 1], model)[0][0], emb[i])
                    for i in range(audio.shape[0]))  # fmt: skip
        report.check("contract batch invariance", alone <= PARITY_TOL, f"clip alone vs in batch: {alone:.2e}")
        one = hear_matpac.get_timestamp_embeddings(on_device, tiny(device, max_windows=1))[0]
        diff = max_diff(one, emb)
        report.check("contract max_windows invariance", diff <= PARITY_TOL, f"max_windows=1 vs default: {diff:.2e}")
    options: list[dict] = [{"layer": 0}, {"timestamp_hop_ms": 40}, {"window_overlap": 0.5}, {"window_seconds": 1.92},
                           {"cpu_packed_weights": False}, {"precision": "tf32"}]  # fmt: skip
    options += [{"precision": p} for p in low_precisions(device)]
    if quick:
        options = options[:2] + options[-1:]
    for option in options:
        name = "option " + ",".join(f"{k}={v}" for k, v in option.items())
        with report.guard(name):
            exact = option.get("precision", "fp32") == "fp32" or (option["precision"] == "tf32" and device.type == "cpu")
            cpu_option = option if option.get("precision") != "fp16" else {}
            got = get_scene_and_timestamp_embeddings(on_device, tiny(device, **option))
            want = get_scene_and_timestamp_embeddings(audio, tiny(torch.device("cpu"), **cpu_option))
            same_ts = torch.equal(got[2].cpu(), want[2])
            if exact:
                diff = max(max_diff(g, w) for g, w in zip(got[:2], want[:2]))
                report.check(name, same_ts and diff <= PARITY_TOL, f"vs cpu: max abs diff {diff:.2e}, timestamps equal: {same_ts}")
            else:
                cos = min(cosine_min(g, w) for g, w in zip(got[:2], want[:2]))
                report.check(name, same_ts and cos >= COSINE_MIN, f"vs cpu: min cosine {cos:.6f}, timestamps equal: {same_ts}")


class DeviceReads(TorchDispatchMode):
    """Counts the ops that make the host wait for the device: reading a scalar, ops sized by
    data, indexing by a boolean mask."""

    READS = {"_local_scalar_dense", "is_nonzero", "nonzero", "masked_select", "unique", "_unique2"}

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        masked = name in ("index", "index_put_", "index_put") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]
        )
        self.count += name in self.READS or masked
        return func(*args, **(kwargs or {}))


def host_waits(call: Callable[[], object], device: torch.device) -> int:
    """Host waits of one `call`: synchronizing CUDA calls, or reading ops on CPU (plus the
    `tolist` every call makes to read its checks)."""
    if device.type == "cuda":
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                call()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in said)
    tolist = torch.Tensor.tolist
    reads = []
    torch.Tensor.tolist = lambda t: reads.append(1) or tolist(t)  # type: ignore[method-assign]
    try:
        with DeviceReads() as mode:
            call()
    finally:
        torch.Tensor.tolist = tolist  # type: ignore[method-assign]
    return mode.count + len(reads)


def check_syncs(report: Report, device: torch.device, quick: bool) -> None:
    audio = (0.1 * torch.randn(4, 20 * 16000, generator=torch.Generator().manual_seed(2))).to(device)
    with report.guard("host syncs"):
        counts = {}
        for max_windows in (1, 64):  # dozens of micro-batches, or one per window length
            model = tiny(device, max_windows=max_windows, timestamp_hop_ms=40)
            hear_matpac.get_timestamp_embeddings(audio, model)  # warm-up (pinned buffers, kernels)
            counts[max_windows] = host_waits(lambda: hear_matpac.get_timestamp_embeddings(audio, model), device)
        ok = counts[1] == counts[64] and counts[1] <= 3
        report.check("host syncs", ok, f"per call: {counts[1]} with max_windows=1, {counts[64]} with 64 "
                     "(must be equal, at most 3)")  # fmt: skip


def check_sdpa(report: Report, device: torch.device, quick: bool) -> None:
    if device.type != "cuda":
        print("INFO sdpa: kernel choice is checked on CUDA only")
        return
    from torch.profiler import ProfilerActivity, profile

    mel = torch.randn(8, 1, 80, 608, device=device)
    for precision in ["fp32", *low_precisions(device)]:
        with report.guard(f"sdpa {precision}"):
            model = tiny(device, precision=precision)
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
            context = torch.autocast("cuda", dtype=dtype) if dtype else contextlib.nullcontext()
            with profile(activities=[ProfilerActivity.CPU]) as prof, torch.no_grad(), context:
                model.encoder(mel, model.options.layer)
            names = {e.key for e in prof.key_averages() if "scaled_dot_product" in e.key}
            fast = [n for n in names if any(k in n for k in ("flash", "efficient", "cudnn"))]
            report.check(f"sdpa {precision}", bool(fast) and not any("math" in n for n in names),
                         f"kernels {sorted(names)}")  # fmt: skip


def tf32_getters() -> dict[str, object]:
    """Every TF32 getter of this torch, old and new; "raises" where one raises."""
    b = torch.backends
    reads = {"get_float32_matmul_precision": torch.get_float32_matmul_precision,
             "cuda.matmul.allow_tf32": lambda: b.cuda.matmul.allow_tf32, "cudnn.allow_tf32": lambda: b.cudnn.allow_tf32}
    for name, holder in (("cuda.matmul", b.cuda.matmul), ("cudnn.conv", getattr(b.cudnn, "conv", None)),
                         ("mkldnn.matmul", getattr(b.mkldnn, "matmul", None))):  # fmt: skip
        if hasattr(holder, "fp32_precision"):
            reads[f"{name}.fp32_precision"] = lambda h=holder: h.fp32_precision
    out: dict[str, object] = {}
    for name, read in reads.items():
        try:
            out[name] = read()
        except RuntimeError:
            out[name] = "raises"
    return out


def check_tf32(report: Report, device: torch.device, quick: bool) -> None:
    before_user = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # the user's setup most likely to break the old getters
    try:
        user = tf32_getters()
        for precision in ("fp32", "tf32"):
            with report.guard(f"tf32 getters {precision}"):
                model = tiny(device, precision=precision)
                seen: list[dict] = []
                model.encoder.patch_embed.register_forward_pre_hook(lambda m, a: seen.append(tf32_getters()))
                hear_matpac.get_scene_embeddings(torch.zeros(2, 16000, device=device), model)
                on = precision == "tf32"
                ok = bool(seen) and all("raises" not in s.values() and s["cuda.matmul.allow_tf32"] is on
                                        and s["get_float32_matmul_precision"] == ("high" if on else "highest")
                                        for s in seen)  # fmt: skip
                after = tf32_getters()
                report.check(f"tf32 getters {precision}", ok and after == user,
                             f"inside the encoder: {seen[-1] if seen else 'no call'}; user's state back: {after == user}")
    finally:
        torch.set_float32_matmul_precision(before_user)


def check_retry_memory(report: Report, device: torch.device, quick: bool) -> None:
    import weakref

    import soundfile

    from hear_matpac.cli import main as cli_main
    from hear_matpac.files import embed as embed_files

    def freed(ref: "weakref.ref", before: int) -> bool:
        if ref() is not None:
            return False
        return device.type != "cuda" or torch.cuda.memory_allocated(device) <= before

    with report.guard("retry frees encoder"):
        model = tiny(device, max_windows=8)
        real, held, at_retry = model.encoder.forward, [], []

        def encoder(x, layer):
            if not held:
                before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
                buffer = torch.empty(16 * MB, device=device)  # 64 MiB of the failed call
                held.append((weakref.ref(buffer), before))
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
            if len(at_retry) == 0:
                at_retry.append(freed(*held[0]))
            return real(x, layer)

        model.encoder.forward = encoder
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hear_matpac.get_scene_embeddings((0.1 * torch.randn(4, 16000)).to(device), model)
        report.check("retry frees encoder", at_retry == [True], f"the failed batch's tensor freed before the retry: {at_retry}")
    with report.guard("retry frees embed"), tempfile.TemporaryDirectory() as tmp:
        wavs = []
        for i in range(3):
            wavs.append(str(Path(tmp) / f"f{i}.wav"))
            soundfile.write(wavs[-1], 0.1 * np.sin(np.arange(16000) / (3 + i)), 16000)
        real_embed, held, at_retry = embed_files.embed_packed, [], []

        def embed_packed(audio, lengths, model, timestamps=False):
            if len(lengths) > 1:
                before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
                buffer = torch.empty(16 * MB, device=device)
                held.append((weakref.ref(buffer), before))
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
            if held and not at_retry:
                at_retry.append(freed(*held[0]))
            return real_embed(audio, lengths, model, timestamps)

        embed_files.embed_packed = embed_packed
        try:
            code = cli_main(["embed", "--weights", TINY, "--device", str(device), "--quiet", "--out",
                             str(Path(tmp) / "out"), *wavs])  # fmt: skip
        finally:
            embed_files.embed_packed = real_embed
        report.check("retry frees embed", code == 0 and at_retry == [True],
                     f"exit {code}; the failed chunk's tensor freed before the first file's retry: {at_retry}")

def check_oom(report: Report, device: torch.device, quick: bool) -> None:
    clips = 64 if quick or device.type == "cpu" else 512
    audio = (0.1 * torch.randn(clips, 10 * 16000, generator=torch.Generator().manual_seed(4))).to(device)
    with report.guard("oom path"), tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "vit.pt"
        if device.type == "cuda":
            write_random_checkpoint(checkpoint)
        else:
            checkpoint = Path(TINY)
        load = lambda **o: hear_matpac.load_model(str(checkpoint), **o).to(device)  # noqa: E731
        capped = load(max_windows=clips)
        with warnings.catch_warnings(record=True) as said, oom_cap(device, capped, clips, load, audio):
            warnings.simplefilter("always")
            got = hear_matpac.get_scene_embeddings(audio, capped)
        retried = [str(w.message) for w in said if "out of device memory" in str(w.message)]
        if not retried:
            report.check("oom path", False, "the cap caused no out-of-memory error: path not exercised")
            return
        final = capped._learnt_budget / capped.encoder.config.n_frames
        unperturbed = hear_matpac.get_scene_embeddings(audio, load(max_windows=clips))
        diff = max_diff(got, unperturbed)
        report.check("oom path", diff <= PARITY_TOL and len(retried) == 1,
                     f"retried down to {final:g} full windows' frames, said {len(retried)} time(s); vs the "
                     f"unperturbed run: max abs diff {diff:.2e}, bitwise equal: {torch.equal(got, unperturbed)}")  # fmt: skip


@contextlib.contextmanager
def oom_cap(device: torch.device, model, clips: int, load, audio) -> Iterator[None]:
    """CUDA: a memory cap midway between what calls with batches of `clips` / 4 and `clips`
    windows need, with the free-memory estimate told there is plenty (as when another process
    takes memory after the check). CPU: the encoder raises CUDA's error above `clips` / 4."""
    if device.type != "cuda":
        original = model.encoder.forward

        def forward(x, layer):
            if x.shape[0] > clips // 4:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
            return original(x, layer)

        model.encoder.forward = forward
        try:
            yield
        finally:
            del model.encoder.forward
        return
    growth = []  # memory a call adds on top of what is allocated before it
    for windows in (clips // 4, clips):
        other = load(max_windows=windows)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        hear_matpac.get_scene_embeddings(audio, other)
        growth.append(torch.cuda.max_memory_allocated(device) - before)
        del other
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    cap = torch.cuda.memory_allocated(device) + sum(growth) / 2
    plenty = batching.cuda_free_bytes
    batching.cuda_free_bytes = lambda d: 2**50  # type: ignore[assignment]
    torch.cuda.set_per_process_memory_fraction(cap / total, device)
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        batching.cuda_free_bytes = plenty  # type: ignore[assignment]
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- throughput


def throughput(device: torch.device, quick: bool) -> list[str]:
    """The table's rows: every precision the device runs x every case."""
    cases = QUICK_CASES["cuda" if device.type == "cuda" else "cpu"] if quick else CASES
    precisions = ["fp32"] if quick and device.type == "cpu" else ["fp32", *low_precisions(device)]
    peak = max(tp.matmul_rate(device, dtype, reps=1 if quick else 3) for dtype in (torch.float32, torch.bfloat16))
    rows = [f"best dense matmul measured: {peak / 1e12:.2f} TFLOP/s",
            "| precision | clips x seconds | audio-s/s | TFLOP/s | of peak | peak memory MB |",
            "| --- | --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "vit_base_random.pt"
        write_random_checkpoint(checkpoint)
        for precision in precisions:
            model = hear_matpac.load_model(str(checkpoint), precision=precision).to(device)
            for clips, seconds in cases:
                audio = tp.noise(clips, seconds, device)
                tp.time_call(model, audio)  # warm-up
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                rss = device.type == "cpu" and tp.reset_peak_rss()
                best = min(tp.time_call(model, audio) for _ in range(1 if quick else 2))
                memory = torch.cuda.max_memory_allocated(device) / MB if device.type == "cuda" else (
                    tp.peak_rss_mb() if rss else float("nan"))  # fmt: skip
                flops = tp.encoder_flops(audio.shape[1], clips, tp.VIT_BASE, tp.VIT_BASE.depth - 1) / best
                rows.append(f"| {precision} | {clips} x {seconds} s | {clips * seconds / best:.1f} | {flops / 1e12:.3f} "
                            f"| {flops / peak:.1%} | {memory:.0f} |")  # fmt: skip
                del audio
            del model
    return rows


EMBED_CASES = {"cuda": (1000, 5.0), "cpu": (16, 1.0)}  # files x seconds of `embed_rate`


def embed_rate(device: torch.device, quick: bool) -> list[str]:
    """`hear-matpac embed` end to end (decoding, calls planned by audio, read-back, writing; the
    model's load included) against the encoder's own rate (one HEAR call on clips of the same
    length in memory), in the fast precision the device runs (bf16, else fp32), default options."""
    import soundfile

    from hear_matpac.cli import main as cli_main

    files, seconds = EMBED_CASES["cuda" if device.type == "cuda" else "cpu"]
    precision = "bf16" if "bf16" in low_precisions(device) else "fp32"
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "vit_base_random.pt"
        write_random_checkpoint(checkpoint)
        rng = np.random.default_rng(0)
        paths = []
        for i in range(files):
            paths.append(str(Path(tmp) / f"{i:05d}.wav"))
            soundfile.write(paths[-1], 0.1 * rng.standard_normal(round(16000 * seconds)), 16000, subtype="PCM_16")
        model = hear_matpac.load_model(str(checkpoint), precision=precision).to(device)
        audio = tp.noise(min(files, 256), seconds, device)
        tp.time_call(model, audio)  # warm-up
        encoder = audio.shape[0] * seconds / min(tp.time_call(model, audio) for _ in range(2))
        del model, audio
        began = time.perf_counter()
        code = cli_main(["embed", *paths, "--out", str(Path(tmp) / "out"), "--weights", str(checkpoint), "--device",
                         str(device), "--quiet", "--precision", precision])  # fmt: skip
        embed = files * seconds / (time.perf_counter() - began)
    return ["", f"embed, {precision}: {files} WAV files x {seconds:g} s, 16 kHz int16 (exit {code})",
            "| embed audio-s/s (end to end) | encoder alone audio-s/s | embed / encoder |",
            "| ---: | ---: | ---: |", f"| {embed:.1f} | {encoder:.1f} | {embed / encoder:.1%} |"]  # fmt: skip


def compile_ratio(device: torch.device, precision: str, clips: int = 16, seconds: int = 10) -> str:
    """Eager / compiled encoder time for one case: the `compile` option (torch.compile with
    dynamic shapes), compiled by a first call."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "vit_base_random.pt"
        write_random_checkpoint(checkpoint)
        model = hear_matpac.load_model(str(checkpoint), precision=precision).to(device)
        audio = tp.noise(clips, seconds, device)
        tp.time_call(model, audio)
        eager = min(tp.time_call(model, audio) for _ in range(3))
        began = time.perf_counter()
        model = hear_matpac.load_model(str(checkpoint), precision=precision, compile=True).to(device)  # the option
        tp.time_call(model, audio)  # compiles (dynamic shapes)
        compile_s = time.perf_counter() - began
        compiled = min(tp.time_call(model, audio) for _ in range(3))
    return (f"INFO torch.compile ({precision}, {clips} x {seconds} s): eager {eager * 1e3:.0f} ms, compiled "
            f"{compiled * 1e3:.0f} ms ({eager / compiled:.2f}x), compile time {compile_s:.0f} s (dynamic shapes)")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="fewer options, small throughput cases only")
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd encoder (slow to compile)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_acceptance: error: --device {args.device}: CUDA is not available here", file=sys.stderr)
        return 2
    start = time.perf_counter()
    print(f"# hear-matpac {hear_matpac.__version__} acceptance on {device} ({tp.machine_description(device)}), "
          f"torch {torch.__version__}{', quick' if args.quick else ''}")  # fmt: skip
    report = Report()
    for check in (check_parity, check_contract, check_syncs, check_sdpa, check_tf32, check_retry_memory, check_oom):
        began = time.perf_counter()
        check(report, device, args.quick)
        print(f"  ({check.__name__}: {time.perf_counter() - began:.1f} s)")
    began = time.perf_counter()
    rows = throughput(device, args.quick) + embed_rate(device, args.quick)
    rows.append(f"({time.perf_counter() - began:.1f} s)")
    print("\n## Throughput (ViT-Base-shaped encoder, random weights, last layer, timestamp embeddings)")
    print("\n".join(rows))
    if args.compile:
        print(compile_ratio(device, "bf16" if "bf16" in low_precisions(device) else "fp32"))
    verdict = "FAIL" if report.failures else "PASS"
    print(f"\n{verdict}: {report.failures} check(s) failed; {time.perf_counter() - start:.0f} s")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
