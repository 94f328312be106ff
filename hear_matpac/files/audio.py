"""Read an audio file as the model wants it: mono float32 at 16 kHz.

Decoding is libsndfile's (through `soundfile`): WAV, FLAC, OGG/Vorbis/Opus, AIFF, MP3 where the
installed libsndfile has it, and the rest of `soundfile.available_formats()`. Channels are
averaged; any other sample rate is resampled to 16 kHz with soxr (libsoxr's very-high-quality
polyphase filter, the resampler librosa uses by default).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import soundfile
import soxr
import torch
from torch import Tensor

from ..io import InputError, MissingFile
from ..config import SAMPLE_RATE

RESAMPLE_QUALITY = "VHQ"  # soxr's very-high-quality recipe (28-bit)

# Looked for when a directory is scanned; a file named on the command line is tried whatever its name.
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
     ".au", ".snd", ".caf", ".w64", ".rf64"}
)  # fmt: skip


class AudioFileError(InputError):
    """A file that cannot be turned into a clip: unreadable, unsupported, empty or not finite."""

    def __init__(self, path: Union[str, "os.PathLike[str]"], problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.problem = problem


@dataclass(frozen=True)
class Clip:
    """One file's audio: `samples` `(n,)` float32 mono at 16 kHz, and what the file held."""

    samples: Tensor
    source_rate: int
    source_channels: int


def read_audio(path: Union[str, "os.PathLike[str]"]) -> Clip:
    """Decode `path`, mix to mono (channel mean, `mix_to_mono`), resample to 16 kHz.

    Raises `FileNotFoundError` for a missing file and `AudioFileError` (a `ValueError`) for an
    empty, undecodable, sample-less or non-finite one, saying which.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioFileError(path, "empty file (0 bytes)")
    try:
        # the path's bytes: a name that is not UTF-8 (held with surrogates) is still that file
        data, rate = soundfile.read(os.fsencode(path), dtype="float32", always_2d=True)  # (frames, channels)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioFileError(path, _decode_problem(path, err)) from None
    if data.shape[0] == 0:
        raise AudioFileError(path, "holds no audio samples (0 frames)")
    mono = mix_to_mono(data)
    if not np.isfinite(mono).all():
        raise AudioFileError(path, "contains NaN or Inf samples")
    mono = resample_to_model_rate(mono, int(rate))
    return Clip(samples=torch.from_numpy(mono), source_rate=int(rate), source_channels=int(data.shape[1]))


def mix_to_mono(data: np.ndarray) -> np.ndarray:
    """`(frames, channels)` float32 -> `(frames,)` float32: the channel mean, as a sum of whole
    channels (a few vector adds) instead of `data.mean(axis=1, dtype=float32)`, which walks
    the short, strided channel axis once per frame and is many times slower.

    Bitwise equal to that mean: the adds are in NumPy's order (one after another below 8
    channels; from 8 on, eight running sums added as a tree, then the rest), from +0.0, and one
    division by the channel count (x 0.5 for stereo, the same number). Beyond 128 channels NumPy
    splits the sum in halves, so the two may differ by rounding there."""
    channels = data.shape[1]
    zero = np.float32(0.0)
    if channels == 1:
        return data[:, 0] + zero  # a new contiguous array; -0.0 becomes +0.0, as in NumPy's mean
    if channels == 2:
        return (data[:, 0] + data[:, 1] + zero) * np.float32(0.5)
    if channels < 8:
        total = data[:, 0] + data[:, 1]
        for c in range(2, channels):
            total += data[:, c]
    else:
        partial = [data[:, j].copy() for j in range(8)]
        whole = channels - channels % 8
        for start in range(8, whole, 8):
            for j in range(8):
                partial[j] += data[:, start + j]
        total = ((partial[0] + partial[1]) + (partial[2] + partial[3])) + ((partial[4] + partial[5]) + (partial[6] + partial[7]))
        for c in range(whole, channels):
            total += data[:, c]
    total += zero
    return total / np.float32(channels)


def resample_to_model_rate(mono: np.ndarray, rate: int) -> np.ndarray:
    """`(samples,)` float32 at `rate` Hz -> `(samples',)` float32 at 16 kHz, contiguous.

    soxr's "VHQ" recipe (linear phase, 28-bit precision; its figures against torchaudio are in
    `benchmarks/resample_quality.py`). Audio already at 16 kHz is returned unchanged.
    """
    if rate == SAMPLE_RATE:
        return np.ascontiguousarray(mono, dtype=np.float32)
    out = soxr.resample(np.ascontiguousarray(mono, dtype=np.float32), rate, SAMPLE_RATE, quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(out, dtype=np.float32)


def _decode_problem(path: Path, err: Exception) -> str:
    reason = getattr(err, "error_string", None) or str(err).splitlines()[0]
    version = soundfile.__libsndfile_version__
    if path.suffix.lower() == ".mp3" and "MP3" not in soundfile.available_formats():
        return f"libsndfile {version} here cannot decode MP3 ({reason}); convert it to WAV or FLAC"
    return f"not decodable as audio by libsndfile {version} ({reason})"
