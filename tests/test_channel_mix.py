"""Issue 25 item 4: channels are mixed by summing whole channels, bitwise equal to the strided
`data.mean(axis=1, dtype=float32)` it replaces, for mono and stereo and beyond."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from hear_matpac.files import audio

F32 = np.finfo(np.float32)
EDGES = np.array([0.0, -0.0, 1.0, -1.0, 0.5, F32.max, -F32.max, F32.tiny, -F32.tiny, F32.smallest_subnormal,
                  -F32.smallest_subnormal, 3 * F32.smallest_subnormal, F32.eps, np.inf, -np.inf, np.nan],
                 dtype=np.float32)  # fmt: skip


def _data(channels: int, seed: int) -> np.ndarray:
    """Random samples in [-1, 1], then every pair of edge values, then random draws of them."""
    rng = np.random.default_rng(seed)
    random = rng.uniform(-1, 1, (20000, channels)).astype(np.float32)
    pairs = np.stack(np.meshgrid(EDGES, EDGES), -1).reshape(-1, 2)
    edges = np.tile(pairs, (1, (channels + 1) // 2))[:, :channels] if channels > 1 else EDGES[:, None]
    drawn = rng.choice(EDGES, (5000, channels))
    return np.ascontiguousarray(np.concatenate([random, edges, drawn]), dtype=np.float32)


def _bits(x: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(x), np.float32(np.nan), x).view(np.uint32)  # any NaN is one NaN


@pytest.mark.parametrize("channels", [1, 2])
def test_mono_and_stereo_are_bitwise_the_mean(channels: int) -> None:
    data = _data(channels, channels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow of the edge values, in both
        expected = data.mean(axis=1, dtype=np.float32)
        mixed = audio.mix_to_mono(data)
    assert mixed.dtype == np.float32 and mixed.flags.c_contiguous and mixed.shape == (len(data),)
    assert np.array_equal(_bits(mixed), _bits(expected))


@pytest.mark.parametrize("channels", [3, 4, 6, 8, 9, 16, 21])
def test_more_channels_are_within_one_ulp_of_the_mean(channels: int) -> None:
    data = _data(channels, channels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = data.mean(axis=1, dtype=np.float32)
        mixed = audio.mix_to_mono(data)
    finite = np.isfinite(expected)
    assert np.array_equal(np.isnan(mixed), np.isnan(expected)) and np.array_equal(mixed[~finite & ~np.isnan(expected)],
                                                                                 expected[~finite & ~np.isnan(expected)])  # fmt: skip
    ulps = np.abs(mixed[finite].view(np.int32).astype(np.int64) - expected[finite].view(np.int32).astype(np.int64))
    assert np.all(ulps <= 1)  # (+0.0 and -0.0 are 2**31 apart here: the signs of zero match too)
