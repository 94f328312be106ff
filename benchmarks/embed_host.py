"""The host's rate in `embed`: audio-seconds per second and dispatched ops per clip with the encoder
replaced by a stand-in that does no work, for one checkout or several measured in one run.

What runs is `FileEmbedder.run` (the `embed` command's pipeline): the planned calls,
`api.embed_packed` (front end, window plans, micro-batches, the finiteness check and its device
read, the scene means and timestamps), the read-back and the background writer writing `.npy`
files into a temporary output folder through the real `OutputStore`. Decoding is excluded: the
decoding step is replaced by chunks made from audio already in memory (each chunk's samples
concatenated once, before the timed run). The encoder is a stand-in returning zeros of the
encoder's output shape (ViT-Base width: 3840 values a column), so the figures are the host's
cost of feeding an encoder of any speed. With `--frontend-stand-in` the front end's STFT and
mel product (the bulk of what is left on a CPU, and device work on a GPU) are a stand-in too, of
equal shape, so what remains is the host's own work: Python, dispatch, planning, the small
index and reduction ops, the read-back and the writes.

Chunks are those the checkout plans for a CUDA device (`--plan cuda`, the default: the host
path that feeds a GPU; a checkout from before `batching.plan_chunks` takes 16 files a call, its
default on every device) or for the CPU (`--plan cpu`). Ops are counted with a
TorchDispatchMode (views included) over a separate, untimed run. glibc's malloc is set to keep
freed memory (`CACHING_MALLOC`; `--plain-malloc` to measure without), as CUDA's caching
allocator does: otherwise every large buffer of a call comes as fresh pages, a cost of the CPU
standing in for the device that would count against large calls.

Each checkout (`--repo PATH`, repeatable; default this one) runs in its own process with PATH
first on `sys.path`, corpora alternated, best of `--rounds`; ratios are to the first checkout.

    python benchmarks/embed_host.py --repo /tmp/base71 --repo . [--scale 0.25] [--timestamps]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

# corpus name -> clip lengths in seconds (scaled by --scale); mixed: uniform 0.5-30 s, seeded
# (about 3 CUDA calls each: the calls overlap the writing in a steady state)
CORPORA = {"1 s": ("fixed", 1.0, 12288), "10 s": ("fixed", 10.0, 1230), "mixed 0.5-30 s": ("uniform", (0.5, 30.0), 768)}
# glibc malloc made a caching allocator, as CUDA's is: no fresh pages (page faults) for every
# large buffer of a call, which a GPU's memory does not pay and which would penalise large calls.
CACHING_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40), "MALLOC_TOP_PAD_": str(2**30)}

CHILD = r'''
import dataclasses, inspect, json, os, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
from pathlib import Path
from torch.utils._python_dispatch import TorchDispatchMode
import hear_matpac
from hear_matpac.config import EncoderConfig
from hear_matpac.encoder import MatpacEncoder
from hear_matpac.files import embed as embed_files
from hear_matpac.files.decode import DecodedChunk
from hear_matpac.files.inputs import InputFile
from hear_matpac.files.progress import AudioProgress
from hear_matpac.files.store import OutputStore
from hear_matpac.weights.synthetic import write_random_checkpoint

args = json.loads(sys.argv[2])
assert Path(hear_matpac.__file__).resolve().is_relative_to(Path(sys.argv[1]).resolve()), hear_matpac.__file__
torch.set_num_threads(args["threads"])
work = Path(tempfile.mkdtemp(prefix="embed_host_"))
weights = write_random_checkpoint(work / "w.pt", EncoderConfig(embed_dim=768, depth=1, num_heads=12, n_frames=608))
model = hear_matpac.load_model(str(weights))

def stand_in(self, mel, layer):  # the encoder's output shape, no work
    return mel.new_zeros(mel.shape[0], mel.shape[-1] // 16, self.config.feature_dim)
MatpacEncoder.forward = stand_in
if args["frontend_stand_in"]:  # the STFT and mel matmul: device work on a GPU, not the host's
    from hear_matpac import config as cfg
    from hear_matpac.frontend import LogMel
    def mel_stand_in(self, audio):
        frames = (max(audio.shape[-1], cfg.WIN_LENGTH) - cfg.WIN_LENGTH) // cfg.HOP_LENGTH + 1
        return audio.new_ones(*audio.shape[:-1], cfg.N_MELS, frames)
    LogMel.mel_power = mel_stand_in

new_api = "batch_size" not in inspect.signature(embed_files.FileEmbedder.run).parameters
if new_api and args["plan"] == "cuda":
    real_plan = embed_files.plan_chunks
    embed_files.plan_chunks = lambda durations, kind, budget: real_plan(durations, "cuda", budget)

class Ops(TorchDispatchMode):
    count = 0
    def __torch_dispatch__(self, func, types, a=(), k=None):
        Ops.count += 1
        return func(*a, **(k or {}))

results = {}
for name, lengths in args["corpora"].items():
    gen = torch.Generator().manual_seed(0)
    audio = [(0.1 * torch.randn(round(16000 * s), generator=gen)) for s in lengths]
    inputs = work / "in" / str(len(results))
    inputs.mkdir(parents=True)
    items = []
    for i in range(len(lengths)):
        path = inputs / f"{i:05d}.wav"
        path.touch()
        items.append(InputFile(path, path.name))
    cache = {}
    def decoded(sources, chunks, workers, pin_memory):
        plan = [list(range(i, min(i + chunks, len(sources)))) for i in range(0, len(sources), chunks)] \
            if isinstance(chunks, int) else chunks
        for indices in plan:
            key = tuple(indices)
            if key not in cache:
                cache[key] = torch.cat([audio[i] for i in indices])
            yield DecodedChunk(list(indices), cache[key], [len(audio[i]) for i in indices], [])
    embed_files.decoded_chunks = decoded
    if not args["write"]:
        OutputStore.write = lambda self, outputs: list(outputs) and None
    def once(count):
        out = Path(tempfile.mkdtemp(dir=work))
        settings = embed_files.folder_settings(weights, model)
        with OutputStore.open(out, settings, False, report=lambda line: None) as store:
            jobs, _, _ = embed_files.plan_jobs(items, store, args["timestamps"], False, measure=False)
            jobs = [dataclasses.replace(j, seconds=s) for j, s in zip(jobs, lengths)]
            progress = AudioProgress(sum(lengths), len(jobs), "bench", quiet=True)
            embedder = embed_files.FileEmbedder(model, torch.device("cpu"), store, progress, "bench", workers=0)
            start, Ops.count = time.perf_counter(), 0
            if count:
                with Ops():
                    tally = embedder.run(jobs) if new_api else embedder.run(jobs, 16)
            else:
                tally = embedder.run(jobs) if new_api else embedder.run(jobs, 16)
            elapsed = time.perf_counter() - start
        assert tally.embedded == len(jobs) and not tally.failed, tally
        return elapsed
    once(False)  # warm-up: caches the chunks' audio
    if args.get("profile"):
        import cProfile, pstats
        cProfile.run("once(False)", str(work / "prof"))
        pstats.Stats(str(work / "prof")).sort_stats("cumulative").print_stats(35)
    best = min(once(False) for _ in range(args["rounds"]))
    once(True)
    results[name] = {"audio_s_per_s": sum(lengths) / best, "ops_per_clip": Ops.count / len(lengths),
                     "clips": len(lengths), "audio_s": sum(lengths)}
print("RESULT " + json.dumps(results))
'''


def corpora(scale: float) -> dict:
    import random

    rng = random.Random(0)
    out = {}
    for name, (kind, size, clips) in CORPORA.items():
        n = max(1, round(clips * scale))
        out[name] = [size] * n if kind == "fixed" else [round(rng.uniform(*size), 3) for _ in range(n)]
    return out


def measure(repo: Path, settings: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(repo), json.dumps(settings)], capture_output=True,
                          text=True, timeout=3600,
                          env=dict(os.environ, PYTHONPATH=str(repo), **({} if settings["plain_malloc"] else CACHING_MALLOC)))
    line = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    if settings.get("profile"):
        print(done.stdout[-12000:])
    if done.returncode or not line:
        raise SystemExit(f"{repo}: failed\n{done.stderr[-3000:]}")
    return json.loads(line[0][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", action="append", type=Path, help="checkout to measure (repeat; default this one)")
    parser.add_argument("--scale", type=float, default=1.0, help="clips per corpus, as a fraction of the default")
    parser.add_argument("--plan", choices=("cuda", "cpu"), default="cuda", help="the device whose chunks are planned")
    parser.add_argument("--timestamps", action="store_true", help="also frame embeddings and timestamps")
    parser.add_argument("--no-write", action="store_true", help="outputs not written (the store's write a no-op)")
    parser.add_argument("--frontend-stand-in", action="store_true",
                        help="the front end's STFT and mel products also a stand-in of equal shape (device work on a GPU)")
    parser.add_argument("--plain-malloc", action="store_true", help="glibc's malloc as it is (see CACHING_MALLOC)")
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the measuring process")
    args = parser.parse_args()
    repos = [r.resolve() for r in (args.repo or [HERE])]
    settings = {"corpora": corpora(args.scale), "plan": args.plan, "timestamps": args.timestamps,
                "rounds": args.rounds, "threads": args.threads, "write": not args.no_write,
                "profile": args.profile, "plain_malloc": args.plain_malloc, "frontend_stand_in": args.frontend_stand_in}  # fmt: skip
    results = [measure(repo, settings) for repo in repos]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"plan {args.plan}, timestamps {args.timestamps}, outputs written {not args.no_write}, "
          f"front end {'a stand-in' if args.frontend_stand_in else 'computed'}, caching malloc {not args.plain_malloc}, {args.threads} torch thread(s), best of {args.rounds}\n")
    header = "| corpus | clips | " + " | ".join(f"{r.name or r}: audio-s/s, ops/clip" for r in repos)
    ratios = " | ".join(f"{r.name}/{repos[0].name}" for r in repos[1:])
    print(header + (" | " + ratios if ratios else "") + " |")
    print("|" + " --- |" * (2 + len(repos) + len(repos[1:])))
    for name in settings["corpora"]:
        cells = [f"{res[name]['audio_s_per_s']:,.0f}, {res[name]['ops_per_clip']:.1f}" for res in results]
        rates = [f"{res[name]['audio_s_per_s'] / results[0][name]['audio_s_per_s']:.2f}x" for res in results[1:]]
        print(f"| {name} | {results[0][name]['clips']} | " + " | ".join(cells + rates) + " |")


if __name__ == "__main__":
    main()
