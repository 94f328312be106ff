"""Timestamps of output columns, from integer sample positions of the STFT geometry.

Column j's STFT frames cover samples [2560 j, 2560 j + 2800): its centre is sample
2560 j + 1400, i.e. 160 j + 87.5 ms. With shifted passes interleaved (timestamp_hop_ms h),
column i is centred at sample 16 h i + 1400. Centres are computed from integers, never
accumulated.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .config import COLUMN_CENTRE_SAMPLES, COLUMN_HOP_SAMPLES, SAMPLE_RATE


def centre_samples(n_columns: int, hop_samples: int = COLUMN_HOP_SAMPLES) -> Tensor:
    """`(n_columns,)` int64 sample index of each column's centre, columns `hop_samples` apart
    (finer than 2560 when shifted passes interleave)."""
    return torch.arange(n_columns, dtype=torch.int64) * hop_samples + COLUMN_CENTRE_SAMPLES


def n_reported_columns(n_samples: int, n_columns: int, hop_samples: int = COLUMN_HOP_SAMPLES) -> int:
    """Columns whose centre lies within the clip; at least one for a non-empty clip."""
    if n_samples < COLUMN_CENTRE_SAMPLES:
        return 1
    return max(min(n_columns, (n_samples - COLUMN_CENTRE_SAMPLES) // hop_samples + 1), 1)


def timestamps_ms(n_samples: int, n_columns: int, hop_samples: int = COLUMN_HOP_SAMPLES) -> Tensor:
    """`(reported,)` float32 centres in ms of the columns reported for a clip of `n_samples`.

    A clip too short to hold one centre gets a single timestamp at its end.
    """
    reported = n_reported_columns(n_samples, n_columns, hop_samples)
    centres = centre_samples(reported, hop_samples).clamp(max=n_samples)
    return (centres.double() * 1000.0 / SAMPLE_RATE).float()
