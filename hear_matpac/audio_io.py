"""Read an audio file as the model wants it: mono float32 at 16 kHz.

Decoding is libsndfile's (through `soundfile`): WAV, FLAC, OGG/Vorbis/Opus, AIFF, MP3 where the
installed libsndfile has it, and the rest of `soundfile.available_formats()`. Channels are
averaged; any sample rate is resampled with `torchaudio.functional.resample` (windowed sinc).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import soundfile
import torch
import torchaudio
from torch import Tensor

from .config import SAMPLE_RATE

# Looked for when a directory is scanned; a file named on the command line is tried whatever its name.
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
     ".au", ".snd", ".caf", ".w64", ".rf64"}
)  # fmt: skip


class AudioFileError(ValueError):
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
    """Decode `path`, mix to mono (channel mean), resample to 16 kHz.

    Raises `FileNotFoundError` for a missing file and `AudioFileError` (a `ValueError`) for an
    empty, undecodable, sample-less or non-finite one, saying which.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioFileError(path, "empty file (0 bytes)")
    try:
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)  # (frames, channels)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioFileError(path, _decode_problem(path, err)) from None
    if data.shape[0] == 0:
        raise AudioFileError(path, "holds no audio samples (0 frames)")
    mono = torch.from_numpy(data).mean(dim=1)
    if not bool(torch.isfinite(mono).all()):
        raise AudioFileError(path, "contains NaN or Inf samples")
    if rate != SAMPLE_RATE:
        mono = torchaudio.functional.resample(mono, orig_freq=int(rate), new_freq=SAMPLE_RATE)
    return Clip(samples=mono.contiguous(), source_rate=int(rate), source_channels=int(data.shape[1]))


def _decode_problem(path: Path, err: Exception) -> str:
    reason = getattr(err, "error_string", None) or str(err).splitlines()[0]
    version = soundfile.__libsndfile_version__
    if path.suffix.lower() == ".mp3" and "MP3" not in soundfile.available_formats():
        return f"libsndfile {version} here cannot decode MP3 ({reason}); convert it to WAV or FLAC"
    return f"not decodable as audio by libsndfile {version} ({reason})"
