"""Decoding throughput per core: what `embed`'s decode workers do for each file (`read_audio`:
decode, mix to mono, resample to 16 kHz), in one process on one thread, for 10 s files of each
format, and the cores per GPU that feeding 50k audio-seconds per second would take.

Also the parts of a 44.1 kHz stereo WAV's cost: decoding alone, the old strided channel mean
against the channel sum `read_audio` now uses, and soxr's VHQ (used) against HQ; and the time
to write one chunk of outputs (scene and frames of `--chunk` inputs) as `OutputStore.write`
does now (one sync per chunk) against one atomic write with its own fsync per file (before),
in a folder under `--write-dir` (default: the system's temporary folder).

The files are written to a temporary folder first and read from the page cache (a disk that
cannot keep up is another limit). Prints figures; not a test.

    python benchmarks/decode_rate.py [--files 8] [--repeats 5] [--seconds 10] [--chunk 256]
                                     [--write-dir DIR] [--only-writes]
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # one thread, before numpy loads
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import soundfile  # noqa: E402
import soxr  # noqa: E402
import torch  # noqa: E402

from hear_matpac.files.audio import mix_to_mono, read_audio  # noqa: E402

TARGET = 50_000  # audio-seconds per second the encoder takes on one GPU (issue 25's estimate)

# name, sample rate, channels, soundfile format, subtype
FORMATS = [
    ("WAV 16 kHz mono (PCM 16)", 16000, 1, "WAV", "PCM_16"),
    ("WAV 44.1 kHz stereo (PCM 16)", 44100, 2, "WAV", "PCM_16"),
    ("FLAC 44.1 kHz stereo", 44100, 2, "FLAC", "PCM_16"),
    ("FLAC 16 kHz mono", 16000, 1, "FLAC", "PCM_16"),
    ("OGG Vorbis 44.1 kHz stereo", 44100, 2, "OGG", "VORBIS"),
    ("MP3 44.1 kHz stereo", 44100, 2, "MP3", "MPEG_LAYER_III"),
]


def _signal(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    """Tones and noise, like music more than silence (codecs work harder on it)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    out = []
    for c in range(channels):
        tones = sum(0.1 * np.sin(2 * np.pi * f * t + c) for f in rng.uniform(80, 6000, 5))
        out.append(tones + 0.05 * rng.standard_normal(len(t)))
    return (np.stack(out, 1) * 0.8).astype(np.float32)


def _best(run: Callable[[], object], repeats: int) -> float:
    """Median seconds of `run` over `repeats`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--write-dir", type=Path, default=None)
    parser.add_argument("--only-writes", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.only_writes:
        _writes(args)
        return
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; one process, one thread; "
          f"libsndfile {soundfile.__libsndfile_version__}, soxr {soxr.__version__}, numpy {np.__version__}")  # fmt: skip
    print(f"{args.files} files of {args.seconds:g} s per format, median of {args.repeats} passes\n")
    print(f"{'format':32s} {'ms/file':>8s} {'audio-s/s per core':>19s} {'cores for 50k audio-s/s':>24s}")
    available = soundfile.available_formats()
    with tempfile.TemporaryDirectory() as folder:
        for label, rate, channels, kind, subtype in FORMATS:
            if kind not in available or subtype not in soundfile.available_subtypes(kind):
                print(f"{label:32s} not available in this libsndfile")
                continue
            paths = []
            for i in range(args.files):
                path = Path(folder) / f"{kind}-{rate}-{channels}-{i}.{kind.lower()}"
                soundfile.write(path, _signal(args.seconds, rate, channels, i), rate, format=kind, subtype=subtype)
                paths.append(path)
            for path in paths:
                read_audio(path)  # warm: page cache, codec tables
            per_pass = _best(lambda: [read_audio(p) for p in paths], args.repeats)
            per_file = per_pass / len(paths)
            rate_s = args.seconds / per_file
            print(f"{label:32s} {per_file * 1e3:8.2f} {rate_s:19,.0f} {TARGET / rate_s:24.1f}")
        _parts(Path(folder), args)
    _writes(args)


def _parts(folder: Path, args: argparse.Namespace) -> None:
    """The parts of one 44.1 kHz stereo WAV: decode, mix (old, new), resample (VHQ, HQ)."""
    path = folder / "parts.wav"
    soundfile.write(path, _signal(args.seconds, 44100, 2, 99), 44100, subtype="PCM_16")
    data, _ = soundfile.read(path, dtype="float32", always_2d=True)
    mono = mix_to_mono(data)
    repeats = max(args.repeats * 4, 10)
    print(f"\nparts of one {args.seconds:g} s 44.1 kHz stereo WAV (ms, median of {repeats}):")
    parts = {
        "decode (soundfile.read, float32)": lambda: soundfile.read(path, dtype="float32", always_2d=True),
        "mix: data.mean(axis=1, dtype=float32) (old)": lambda: data.mean(axis=1, dtype=np.float32),
        "mix: mix_to_mono, channel sum (used)": lambda: mix_to_mono(data),
        "resample: soxr VHQ (used)": lambda: soxr.resample(mono, 44100, 16000, quality="VHQ"),
        "resample: soxr HQ": lambda: soxr.resample(mono, 44100, 16000, quality="HQ"),
    }
    for label, run in parts.items():
        run()
        print(f"  {label:46s} {_best(run, repeats) * 1e3:7.2f}")


def _writes(args: argparse.Namespace) -> None:
    """One chunk of `args.chunk` inputs' outputs (scene (3840,), frames (63, 3840)): grouped
    (`OutputStore.write`) against one `atomic_write` per file, each with its fsync."""
    from hear_matpac.files.store import Need, OutputStore, Source
    from hear_matpac.io import atomic_write

    rng = np.random.default_rng(0)
    scene = rng.standard_normal(3840).astype(np.float32)
    frames = (rng.standard_normal((63, 3840)).astype(np.float32), np.arange(63, dtype=np.float32))
    chunk = [(f"{i}.wav", Source(f"/audio/{i}.wav", i, 1), Need(True, True), scene, frames) for i in range(args.chunk)]
    print(f"\none chunk of {args.chunk} inputs, scene and frames each ({2 * args.chunk} files), ms, 3 rounds:")
    for round_ in range(3):
        with tempfile.TemporaryDirectory(dir=args.write_dir) as folder:
            start = time.perf_counter()
            with OutputStore.open(Path(folder) / "grouped", {"model_options": {}}, False, lambda line: None) as store:
                store.write(chunk)
            grouped = time.perf_counter() - start
            start = time.perf_counter()
            for name, _, _, s, (embeddings, timestamps) in chunk:
                with atomic_write(Path(folder) / "each" / f"{name}.scene.npy") as handle:
                    np.save(handle, s)
                with atomic_write(Path(folder) / "each" / f"{name}.frames.npz") as handle:
                    np.savez(handle, embeddings=embeddings, timestamps=timestamps)
            each = time.perf_counter() - start
        print(f"  round {round_ + 1}: grouped (one sync) {grouped * 1e3:7.0f}   an fsync per file {each * 1e3:7.0f}")


if __name__ == "__main__":
    main()
