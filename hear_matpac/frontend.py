"""Waveform -> normalised log-mel spectrogram, exactly as MATPAC computes it, on torch alone.

The published code computes it with torchaudio's `MelSpectrogram`; the same numbers come from
`torch.stft` and a Slaney mel filterbank built here (`shared/parity/README.md`, fact 1).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from .config import (
    F_MAX,
    F_MIN,
    HOP_LENGTH,
    LOG_EPS,
    MEL_MEAN,
    MEL_STD,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    WIN_LENGTH,
)

# Slaney's mel scale (Auditory Toolbox): linear below 1 kHz at 200/3 Hz per mel, logarithmic
# above it with 27 mels per factor 6.4 in frequency.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


def n_stft_frames(n_samples: int) -> int:
    """Frames of the log-mel for `n_samples` of audio (no centre padding; short audio is
    zero-padded to one STFT window first, so there is always at least one frame)."""
    return (max(n_samples, WIN_LENGTH) - WIN_LENGTH) // HOP_LENGTH + 1


def hz_to_mel_slaney(hz: Tensor) -> Tensor:
    """Slaney mel of `hz` (any shape, float64 recommended)."""
    linear = hz / _SLANEY_HZ_PER_MEL
    log = _SLANEY_BREAK_MEL + torch.log(hz.clamp(min=_SLANEY_BREAK_HZ) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
    return torch.where(hz >= _SLANEY_BREAK_HZ, log, linear)


def mel_to_hz_slaney(mel: Tensor) -> Tensor:
    """Inverse of `hz_to_mel_slaney`."""
    linear = mel * _SLANEY_HZ_PER_MEL
    log = _SLANEY_BREAK_HZ * torch.exp(_SLANEY_LOG_STEP * (mel - _SLANEY_BREAK_MEL))
    return torch.where(mel >= _SLANEY_BREAK_MEL, log, linear)


def slaney_mel_filterbank(
    n_freqs: int = N_FFT // 2 + 1,
    n_mels: int = N_MELS,
    sample_rate: int = SAMPLE_RATE,
    f_min: float = F_MIN,
    f_max: float = F_MAX,
) -> Tensor:
    """`(n_freqs, n_mels)` float32 triangular filters, equally spaced on the Slaney mel scale
    between `f_min` and `f_max`, each scaled to unit area (Slaney normalisation: 2 / width in Hz).

    Computed in float64 and rounded once, so it equals torchaudio's
    `melscale_fbanks(..., norm="slaney", mel_scale="slaney")` to float32 rounding.
    """
    bins_hz = torch.linspace(0.0, sample_rate // 2, n_freqs, dtype=torch.float64)
    mel_edges = torch.linspace(
        float(hz_to_mel_slaney(torch.tensor(f_min, dtype=torch.float64))),
        float(hz_to_mel_slaney(torch.tensor(f_max, dtype=torch.float64))),
        n_mels + 2,
        dtype=torch.float64,
    )
    edges_hz = mel_to_hz_slaney(mel_edges)  # (n_mels + 2,): lower, centre, upper of each filter
    lower, centre, upper = edges_hz[:-2], edges_hz[1:-1], edges_hz[2:]
    rising = (bins_hz[:, None] - lower) / (centre - lower)
    falling = (upper - bins_hz[:, None]) / (upper - centre)
    triangles = torch.minimum(rising, falling).clamp(min=0.0)
    return (triangles * (2.0 / (upper - lower))).to(torch.float32)


class LogMel(nn.Module):
    """Slaney-scaled, Slaney-normalised power mel spectrogram, log-compressed and standardised
    with MATPAC's fixed statistics.

    Input `(batch, samples)` at 16 kHz (any float dtype, computed in float32); output
    `(batch, N_MELS, frames)` float32 with `frames = n_stft_frames(samples)`.

    The Hann window and the filterbank are non-persistent buffers: they move with
    `model.to(device)` and stay float32 whatever dtype the rest of the model is cast to
    (`model.half()` leaves the front end exact).
    """

    window: Tensor  # (WIN_LENGTH,) periodic Hann
    filterbank: Tensor  # (N_FFT // 2 + 1, N_MELS)

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", _hann_window(), persistent=False)
        self.register_buffer("filterbank", slaney_mel_filterbank(), persistent=False)

    def _apply(self, fn: Callable[[Tensor], Tensor], *args, **kwargs) -> "LogMel":
        # Let device moves through but never a dtype change: rebuild a cast buffer in float32
        # on its new device, from its definition rather than from the rounded copy.
        super()._apply(fn, *args, **kwargs)
        for name, build in (("window", _hann_window), ("filterbank", slaney_mel_filterbank)):
            buffer = self._buffers[name]
            if buffer.dtype != torch.float32:
                self._buffers[name] = build().to(buffer.device)
        return self

    def forward(self, audio: Tensor) -> Tensor:
        # in place on the fresh mel power: the values of (log(power + eps) - mean) / std
        return self.mel_power(audio).add_(LOG_EPS).log_().sub_(MEL_MEAN).div_(MEL_STD)

    def mel_power(self, audio: Tensor) -> Tensor:
        """`(batch, samples)` -> `(batch, N_MELS, frames)` float32 mel power, before the log."""
        audio = audio.to(torch.float32)
        if audio.shape[-1] < WIN_LENGTH:
            audio = nn.functional.pad(audio, (0, WIN_LENGTH - audio.shape[-1]))
        spectrum = torch.stft(
            audio,
            n_fft=N_FFT,
            hop_length=HOP_LENGTH,
            win_length=WIN_LENGTH,
            window=self.window,
            center=False,
            onesided=True,
            return_complex=True,
        )  # (batch, n_freqs, frames) complex64
        power = spectrum.abs().pow(2.0)
        return torch.matmul(power.transpose(-1, -2), self.filterbank).transpose(-1, -2)


def _hann_window() -> Tensor:
    return torch.hann_window(WIN_LENGTH, periodic=True, dtype=torch.float32)
