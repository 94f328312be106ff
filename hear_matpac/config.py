"""Constants of MATPAC's input geometry, named once, and the encoder's shape.

Every number here comes from the published MATPAC inference code, as stated in the parity
fixtures' README (`shared/parity/README.md`).
"""
from __future__ import annotations

from dataclasses import dataclass

# Front end: 16 kHz mono, 25 ms periodic Hann window, 10 ms hop, no centre padding.
SAMPLE_RATE = 16000
N_FFT = 400
WIN_LENGTH = 400
HOP_LENGTH = 160
F_MIN = 50.0
F_MAX = 8000.0
N_MELS = 80
# log(mel + float32 eps), then (x - MEL_MEAN) / MEL_STD: MATPAC's fixed dataset statistics.
LOG_EPS = 1.1920929e-07
MEL_MEAN = -7.056
MEL_STD = 4.193

# Encoder: 16x16 patches over (mel bins, frames).
PATCH = 16
FREQ_PATCHES = N_MELS // PATCH  # 5 frequency tokens per column
HEAD_DIM = 64  # released checkpoints: embed_dim 768, 12 heads
LAYER_NORM_EPS = 1e-6
MLP_RATIO = 4

# One output column spans PATCH frames: its STFT frames cover samples
# [COLUMN_HOP_SAMPLES * j, COLUMN_HOP_SAMPLES * j + COLUMN_SPAN_SAMPLES).
COLUMN_HOP_SAMPLES = PATCH * HOP_LENGTH  # 2560 samples = 160 ms
COLUMN_SPAN_SAMPLES = (PATCH - 1) * HOP_LENGTH + WIN_LENGTH  # 2800 samples = 175 ms
COLUMN_CENTRE_SAMPLES = COLUMN_SPAN_SAMPLES // 2  # 1400 samples = 87.5 ms
COLUMN_HOP_MS = COLUMN_HOP_SAMPLES * 1000 // SAMPLE_RATE  # 160 ms: MATPAC's native frame hop
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 log-mel frames per second



@dataclass(frozen=True)
class EncoderConfig:
    """Shape of a MATPAC ViT encoder, as inferred from a checkpoint's tensors."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    n_freq: int = N_MELS
    n_frames: int = 608  # frames of the longest window (pos_embed columns x PATCH)

    @property
    def max_columns(self) -> int:
        """Columns of the positional table (38 for 608 frames, 62 for 992)."""
        return self.n_frames // PATCH

    @property
    def feature_dim(self) -> int:
        """Size of one column's frame feature: the frequency tokens concatenated."""
        return (self.n_freq // PATCH) * self.embed_dim
