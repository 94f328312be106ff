"""Options of `load_model` (also `heareval --model-options` JSON), checked once, up front."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from .config import EncoderConfig
from .precision import DEFAULT_PRECISION, check_precision_name

DEFAULT_MAX_WINDOWS = 16  # ViT-Base, 608 frames: about 6 MB of live activations per window (benchmarks/)


@dataclass(frozen=True)
class ModelOptions:
    """`layer`: encoder block whose output gives the features, 0-based, negative counts from
    the end (default -1, the last, after the final LayerNorm, as MATPAC).
    `max_windows`: most windows encoded at once (bounds memory; does not change results).
    `precision`: "fp32" (default), "bf16" (CPU, CUDA) or "fp16" (CUDA): autocast for the
    encoder only; the front end runs and the features come back in float32."""

    layer: int = -1
    max_windows: int = DEFAULT_MAX_WINDOWS
    precision: str = DEFAULT_PRECISION

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
        max_windows = _int_option("max_windows", parsed.max_windows)
        if max_windows < 1:
            raise ValueError(f"max_windows must be at least 1, got {max_windows}")
        precision = check_precision_name(parsed.precision)
        return cls(layer=layer % config.depth, max_windows=max_windows, precision=precision)


def _int_option(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"option {name} must be an integer, got {value!r}")
    return value
