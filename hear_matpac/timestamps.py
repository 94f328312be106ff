"""Timestamps of output columns, from integer sample positions of the STFT geometry.

Column j's STFT frames cover samples [2560 j, 2560 j + 2800): its centre is sample
2560 j + 1400, i.e. 160 j + 87.5 ms. Centres are computed from integers, never accumulated.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .config import COLUMN_CENTRE_SAMPLES, COLUMN_HOP_SAMPLES, SAMPLE_RATE


def centre_samples(n_columns: int) -> Tensor:
    """`(n_columns,)` int64 sample index of each column's centre."""
    return torch.arange(n_columns, dtype=torch.int64) * COLUMN_HOP_SAMPLES + COLUMN_CENTRE_SAMPLES


def n_reported_columns(n_samples: int, n_columns: int) -> int:
    """Columns whose centre lies within the clip; at least one for a non-empty clip."""
    inside = int((centre_samples(n_columns) <= n_samples).sum())
    return max(inside, 1)


def timestamps_ms(n_samples: int, n_columns: int) -> Tensor:
    """`(reported,)` float32 centres in ms of the columns reported for a clip of `n_samples`.

    A clip too short to hold one centre gets a single timestamp at its end.
    """
    reported = n_reported_columns(n_samples, n_columns)
    centres = centre_samples(reported).clamp(max=n_samples)
    return (centres.double() * 1000.0 / SAMPLE_RATE).float()
