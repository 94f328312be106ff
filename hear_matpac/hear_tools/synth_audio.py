"""Real-sounding synthetic sounds at 16 kHz for the test and demo tasks: harmonic tones,
chirps, noise bursts, each with an attack/release envelope, over quiet room noise.

Every function takes a `numpy.random.Generator`, so a seed gives the same audio everywhere.
All outputs are float64 numpy arrays `(samples,)` at `SAMPLE_RATE`.
"""
from __future__ import annotations

import numpy as np

from ..config import SAMPLE_RATE

SOUNDS = ("tone", "chirp", "noise")
ATTACK_S = 0.02
RELEASE_S = 0.05


def envelope(n: int) -> np.ndarray:
    """`(n,)` linear attack, flat sustain, exponential-looking release, so onsets are sharp
    and nothing clicks."""
    t = np.arange(n) / SAMPLE_RATE
    dur = n / SAMPLE_RATE
    attack = np.clip(t / ATTACK_S, 0.0, 1.0)
    release = np.clip((dur - t) / RELEASE_S, 0.0, 1.0) ** 2
    return attack * release


def tone(n: int, rng: np.random.Generator, f0: float | None = None) -> np.ndarray:
    """A harmonic tone (fundamental 150-900 Hz unless `f0` is given, 4-8 partials with
    decaying amplitudes, slight vibrato), `(n,)`."""
    f0 = float(rng.uniform(150.0, 900.0)) if f0 is None else f0
    t = np.arange(n) / SAMPLE_RATE
    vibrato = 1.0 + 0.004 * np.sin(2 * np.pi * rng.uniform(4.0, 6.0) * t)
    phase = 2 * np.pi * f0 * np.cumsum(vibrato) / SAMPLE_RATE
    out = np.zeros(n)
    for k in range(1, int(rng.integers(4, 9)) + 1):
        if k * f0 >= SAMPLE_RATE / 2 - 500:
            break
        out += rng.uniform(0.5, 1.0) / k * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return _normalise(out * envelope(n))


def chirp(n: int, rng: np.random.Generator) -> np.ndarray:
    """An exponential sweep between 300 Hz and 6 kHz, up or down, with two harmonics, `(n,)`."""
    lo, hi = rng.uniform(300.0, 800.0), rng.uniform(2500.0, 6000.0)
    f_start, f_end = (lo, hi) if rng.random() < 0.5 else (hi, lo)
    t = np.arange(n) / SAMPLE_RATE
    freq = f_start * (f_end / f_start) ** (t / max(t[-1], 1e-3))
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    out = np.sin(phase) + 0.3 * np.sin(2 * phase) * (2 * freq < SAMPLE_RATE / 2 - 500)
    return _normalise(out * envelope(n))


def noise_burst(n: int, rng: np.random.Generator) -> np.ndarray:
    """White noise band-limited to a random band (at least one octave wide), `(n,)`."""
    lo = rng.uniform(200.0, 3000.0)
    hi = min(lo * rng.uniform(2.0, 6.0), 7800.0)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    spectrum[(freqs < lo) | (freqs > hi)] = 0.0
    return _normalise(np.fft.irfft(spectrum, n) * envelope(n))


def sound(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """One sound of `kind` (one of `SOUNDS`), `(n,)`, peak 1."""
    makers = {"tone": tone, "chirp": chirp, "noise": noise_burst}
    if kind not in makers:
        raise ValueError(f"unknown sound kind {kind!r}; expected one of {', '.join(SOUNDS)}")
    return makers[kind](n, rng)


def room_noise(n: int, rng: np.random.Generator, level: float = 0.003) -> np.ndarray:
    """Quiet pinkish background noise (white noise through a one-pole low-pass), `(n,)`."""
    white = rng.standard_normal(n)
    spectrum = np.fft.rfft(white) / np.sqrt(1.0 + np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE) / 300.0)
    out = np.fft.irfft(spectrum, n)
    return level * out / (np.std(out) + 1e-12)


def _normalise(x: np.ndarray) -> np.ndarray:
    peak = np.max(np.abs(x))
    return x / peak if peak > 0 else x
