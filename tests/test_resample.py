"""Files at other sample rates are resampled with soxr: quality against the exact signal, and
agreement with torchaudio's windowed-sinc resampler where torchaudio loads."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from hear_matpac.files.audio import read_audio, resample_to_model_rate
from hear_matpac.config import SAMPLE_RATE
from conftest import torchaudio_or_skip


def _sine(rate: int, seconds: float = 1.0, hz: float = 1000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _snr_db(got: np.ndarray, want: np.ndarray) -> float:
    edge = SAMPLE_RATE // 20  # leave out 50 ms at each end (filter start-up)
    err = got[edge:-edge].astype(np.float64) - want[edge:-edge]
    return float(10 * np.log10(np.sum(want[edge:-edge].astype(np.float64) ** 2) / np.sum(err**2)))


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_sine_resampled_to_16k_is_clean(rate):
    out = resample_to_model_rate(_sine(rate), rate)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert len(out) == SAMPLE_RATE
    # float32 audio itself is good to about 140 dB; demand far more than any task could notice
    assert _snr_db(out, _sine(SAMPLE_RATE)) > 90


def test_16k_is_returned_unchanged():
    x = _sine(SAMPLE_RATE)
    assert np.array_equal(resample_to_model_rate(x, SAMPLE_RATE), x)


def test_read_audio_resamples_a_44k_stereo_file(tmp_path):
    left = _sine(44100)
    path = tmp_path / "s.wav"
    soundfile.write(path, np.stack([left, left], axis=1), 44100, subtype="FLOAT")
    clip = read_audio(path)
    assert (clip.source_rate, clip.source_channels, clip.samples.dtype) == (44100, 2, torch.float32)
    assert _snr_db(clip.samples.numpy(), _sine(SAMPLE_RATE)) > 90


def test_agrees_with_torchaudio_resample():
    torchaudio = torchaudio_or_skip()
    x = _sine(44100, hz=440.0) + _sine(44100, hz=3000.0)
    ours = resample_to_model_rate(x, 44100)
    theirs = torchaudio.functional.resample(torch.from_numpy(x), 44100, SAMPLE_RATE).numpy()
    assert ours.shape == theirs.shape
    edge = SAMPLE_RATE // 20
    assert np.abs(ours[edge:-edge] - theirs[edge:-edge]).max() < 1e-2
