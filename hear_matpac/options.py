"""Options of `load_model` (also `heareval --model-options` JSON), checked once, up front."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

from .batching import DEFAULT_MAX_WINDOWS
from .config import COLUMN_HOP_MS, FRAMES_PER_SECOND, PATCH, EncoderConfig
from .precision import DEFAULT_PRECISION, check_precision_name

__all__ = ["DEFAULT_MAX_WINDOWS", "ModelOptions", "TIMESTAMP_HOPS_MS"]
# Finer timestamp hops: COLUMN_HOP_MS / hop passes, each shifted by a whole number of frames.
TIMESTAMP_HOPS_MS = (160, 80, 40, 20)
COLUMN_SECONDS = PATCH / FRAMES_PER_SECOND  # 0.16 s: window lengths are whole columns


@dataclass(frozen=True)
class ModelOptions:
    """`layer`: encoder block whose output gives the features, 0-based, negative counts from
    the end (default -1, the last, after the final LayerNorm, as MATPAC).
    `max_windows`: most full-length windows encoded at once, or as many frames in shorter
    windows (bounds memory; does not change results). None (default): 16 on CPU; on CUDA as
    many as half the free memory holds, at most 512 (`batching`).
    `timestamp_hop_ms`: spacing of timestamp embeddings, 160 (native) / 80 / 40 / 20 ms; finer
    hops add passes over the audio shifted by multiples of the hop (scene unaffected).
    `window_overlap`: fraction in [0, 1) by which consecutive windows overlap on long audio;
    each column is kept from the window in which it sits most centrally (0: MATPAC's cut).
    `window_seconds`: window length (temporal support), a multiple of 0.16 s up to the
    checkpoint's maximum; None means the maximum (6.08 s, or 9.92 s).
    `precision`: "fp32" (default; exact: TF32 off on CUDA whatever the global settings),
    "tf32" (CUDA matmuls and convolutions of the encoder in TF32; on CPU the same as fp32),
    "bf16" (CPU, CUDA) or "fp16" (CUDA): autocast for the encoder only; the front end runs
    and the features come back in float32.
    `cpu_packed_weights`: for float32 on CPU, multiply by a copy of the linear weights kept
    in MKL's packed GEMM layout (about 1.1x faster, same numbers, one more copy of those
    weights in memory: 324 MB for ViT-Base); False saves that memory."""

    layer: int = -1
    max_windows: Optional[int] = None
    timestamp_hop_ms: int = COLUMN_HOP_MS
    window_overlap: float = 0.0
    window_seconds: Optional[float] = None
    precision: str = DEFAULT_PRECISION
    cpu_packed_weights: bool = True

    @classmethod
    def parse(cls, options: Mapping[str, Any], config: EncoderConfig) -> "ModelOptions":
        """Check user options against the encoder they apply to; normalise `layer` to 0-based."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(known))}")
        parsed = cls(**options)
        layer = _int_option("layer", parsed.layer)
        if not -config.depth <= layer < config.depth:
            raise ValueError(
                f"layer={layer} is out of range for an encoder of depth {config.depth}: "
                f"use 0..{config.depth - 1}, or -1 for the last"
            )
        max_windows = None if parsed.max_windows is None else _int_option("max_windows", parsed.max_windows)
        if max_windows is not None and max_windows < 1:
            raise ValueError(f"max_windows must be at least 1, got {max_windows}")
        return cls(
            layer=layer % config.depth,
            max_windows=max_windows,
            timestamp_hop_ms=_hop_option(parsed.timestamp_hop_ms),
            window_overlap=_overlap_option(parsed.window_overlap),
            window_seconds=_window_seconds_option(parsed.window_seconds, config),
            precision=check_precision_name(parsed.precision),
            cpu_packed_weights=_bool_option("cpu_packed_weights", parsed.cpu_packed_weights),
        )

    def window_frames(self, config: EncoderConfig) -> int:
        """Log-mel frames per window: `window_seconds` in frames, or the checkpoint's maximum."""
        if self.window_seconds is None:
            return config.n_frames
        return round(self.window_seconds * FRAMES_PER_SECOND)

    @property
    def timestamp_passes(self) -> int:
        """Passes over the audio needed for `timestamp_hop_ms` (1 at the native 160 ms)."""
        return COLUMN_HOP_MS // self.timestamp_hop_ms


def _int_option(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"option {name} must be an integer, got {value!r}")
    return value


def _bool_option(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"option {name} must be true or false, got {value!r}")
    return value


def _number_option(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"option {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"option {name} must be finite, got {value!r}")
    return float(value)


def _hop_option(value: Any) -> int:
    hop = _number_option("timestamp_hop_ms", value)
    if hop not in TIMESTAMP_HOPS_MS:
        raise ValueError(
            f"timestamp_hop_ms must be one of {', '.join(map(str, TIMESTAMP_HOPS_MS))} (ms), got {value!r}; "
            f"finer hops cost {COLUMN_HOP_MS} / hop passes of the encoder"
        )
    return int(hop)


def _overlap_option(value: Any) -> float:
    overlap = _number_option("window_overlap", value)
    if not 0.0 <= overlap < 1.0:
        raise ValueError(
            f"window_overlap must be a fraction in [0, 1), e.g. 0 (no overlap) or 0.5, got {value!r}"
        )
    return overlap


def _window_seconds_option(value: Any, config: EncoderConfig) -> float:
    longest = config.n_frames / FRAMES_PER_SECOND
    if value is None:
        return longest
    seconds = _number_option("window_seconds", value)
    columns = seconds / COLUMN_SECONDS
    if seconds <= 0 or abs(columns - round(columns)) > 1e-6:
        raise ValueError(
            f"window_seconds must be a positive multiple of {COLUMN_SECONDS:g} s (one 16-frame "
            f"column), e.g. 0.96, 1.92, 3.04 or {longest:g}; got {value!r}"
        )
    if round(columns) > config.max_columns:
        raise ValueError(
            f"window_seconds={value!r} is longer than this checkpoint's window of {longest:g} s "
            f"({config.n_frames} frames); use at most {longest:g}"
        )
    return round(columns) * PATCH / FRAMES_PER_SECOND
