"""Resampling to 16 kHz: soxr (what `read_audio` uses) against scipy's polyphase filter and
torchaudio's windowed sinc (the front end's old resampler), where each is installed.

Prints, per resampler: the SNR of a 1 kHz sine taken from 44.1 kHz to 16 kHz (against the exact
16 kHz sine, 50 ms left out at each end), the worst alias left of a 7.99-9 kHz sweep (energy above
8 kHz must vanish), the time to resample 60 s of 44.1 kHz audio (median of --repeats), and how
much the embeddings of the bundled tiny model change between soxr and torchaudio.

    python benchmarks/resample_quality.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable, Dict

import numpy as np
import soxr
import torch

import hear_matpac
from hear_matpac.config import SAMPLE_RATE
from hear_matpac.weights.locate import TINY_UNTRAINED

SOURCE_RATE = 44100


def resamplers() -> Dict[str, Callable[[np.ndarray], np.ndarray]]:
    found: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "soxr VHQ (used)": lambda x: soxr.resample(x, SOURCE_RATE, SAMPLE_RATE, quality="VHQ"),
        "soxr HQ": lambda x: soxr.resample(x, SOURCE_RATE, SAMPLE_RATE, quality="HQ"),
    }
    try:
        from scipy.signal import resample_poly

        found["scipy resample_poly"] = lambda x: resample_poly(x, 160, 441).astype(np.float32)
    except ImportError:
        print("scipy not installed: skipped")
    try:
        import torchaudio

        found["torchaudio sinc (old)"] = lambda x: torchaudio.functional.resample(
            torch.from_numpy(x), SOURCE_RATE, SAMPLE_RATE
        ).numpy()
    except (ImportError, OSError) as err:
        print(f"torchaudio does not load ({type(err).__name__}): skipped")
    return found


def tone(rate: int, hz: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def snr_db(got: np.ndarray, want: np.ndarray) -> float:
    edge = SAMPLE_RATE // 20
    n = min(len(got), len(want))
    err = got[edge : n - edge].astype(np.float64) - want[edge : n - edge]
    return float(10 * np.log10(np.sum(want[edge : n - edge].astype(np.float64) ** 2) / np.sum(err**2)))


def alias_db(resample: Callable[[np.ndarray], np.ndarray]) -> float:
    """Loudest output (dB re the input's RMS) of tones that lie above the new Nyquist frequency."""
    worst = -np.inf
    for hz in (8200.0, 9000.0, 12000.0):
        x = tone(SOURCE_RATE, hz)
        y = resample(x)[SAMPLE_RATE // 20 : -SAMPLE_RATE // 20].astype(np.float64)
        worst = max(worst, 10 * np.log10(np.mean(y**2) / np.mean(x.astype(np.float64) ** 2) + 1e-30))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, soxr {soxr.__version__}")
    minute = np.random.default_rng(0).standard_normal(60 * SOURCE_RATE).astype(np.float32) * 0.1
    want = tone(SAMPLE_RATE, 1000.0)
    outputs = {}
    print(f"{'resampler':24} {'1 kHz SNR dB':>12} {'alias dB':>9} {'60 s, ms':>9}")
    for name, resample in resamplers().items():
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            resample(minute)
            times.append(time.perf_counter() - start)
        outputs[name] = resample(minute[: 10 * SOURCE_RATE])
        print(
            f"{name:24} {snr_db(resample(tone(SOURCE_RATE, 1000.0)), want):12.1f} "
            f"{alias_db(resample):9.1f} {1000 * statistics.median(times):9.1f}"
        )
    if "torchaudio sinc (old)" in outputs:
        model = hear_matpac.load_model(str(TINY_UNTRAINED))
        a = torch.from_numpy(np.ascontiguousarray(outputs["soxr VHQ (used)"]))[None]
        b = torch.from_numpy(np.ascontiguousarray(outputs["torchaudio sinc (old)"]))[None]
        n = min(a.shape[1], b.shape[1])
        ea, eb = (hear_matpac.get_timestamp_embeddings(x[:, :n], model)[0][0] for x in (a, b))
        cos = torch.nn.functional.cosine_similarity(ea, eb, dim=-1)
        print(
            f"embeddings of 10 s of noise, soxr vs torchaudio (tiny model): max abs diff "
            f"{float((ea - eb).abs().max()):.3g} (feature RMS {float(ea.pow(2).mean().sqrt()):.3g}), "
            f"min cosine {float(cos.min()):.6f}, samples {a.shape[1]} vs {b.shape[1]}"
        )


if __name__ == "__main__":
    main()
