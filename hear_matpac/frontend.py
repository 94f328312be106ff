"""Waveform -> normalised log-mel spectrogram, exactly as MATPAC computes it."""
from __future__ import annotations

import torch
import torchaudio
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


def n_stft_frames(n_samples: int) -> int:
    """Frames of the log-mel for `n_samples` of audio (no centre padding; short audio is
    zero-padded to one STFT window first, so there is always at least one frame)."""
    return (max(n_samples, WIN_LENGTH) - WIN_LENGTH) // HOP_LENGTH + 1


class LogMel(nn.Module):
    """Slaney-scaled, Slaney-normalised power mel spectrogram, log-compressed and standardised
    with MATPAC's fixed statistics.

    Input `(batch, samples)` float32 at 16 kHz; output `(batch, N_MELS, frames)` float32 with
    `frames = n_stft_frames(samples)`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=N_FFT,
            win_length=WIN_LENGTH,
            hop_length=HOP_LENGTH,
            f_min=F_MIN,
            f_max=F_MAX,
            n_mels=N_MELS,
            window_fn=torch.hann_window,
            power=2.0,
            center=False,
            norm="slaney",
            mel_scale="slaney",
        )

    def forward(self, audio: Tensor) -> Tensor:
        if audio.shape[-1] < WIN_LENGTH:
            audio = nn.functional.pad(audio, (0, WIN_LENGTH - audio.shape[-1]))
        mel = self.mel(audio.float())
        return (torch.log(mel + LOG_EPS) - MEL_MEAN) / MEL_STD
